"""The adapter's request handling, with a backend that returns its input (the map is the tile)."""

import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from models.bioimageio.adapter import (
    AdapterServer,
    BackendError,
    UnknownModelError,
    parse_server_timing,
    server_timing,
)
from models.bioimageio.invocation import Invocation, read_tile, run
from tiling.encode import encode_tile


class Identity:
    """A 'model' whose output is its input scaled to 0..1: the tile itself is the map."""

    def predict(self, model_id: str, tile: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        if model_id != "identity":
            raise UnknownModelError("only 'identity' here")
        return (tile / 255.0).astype(np.float32)

    def metadata(self, model_id: str) -> dict[str, Any]:
        return {"modelId": model_id, "weightsFormat": "none"}


def tile() -> np.ndarray:
    pixels = np.zeros((1, 64, 64), dtype=np.uint8)
    pixels[0, 10:20, 10:30] = 250
    pixels[0, 40:50, 40:45] = 200
    return pixels


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_options_are_checked_by_name() -> None:
    assert Invocation.from_attributes({}, "m") == Invocation(model="m")
    parsed = Invocation.from_attributes(
        {"model": "x", "output": "labels", "threshold": "0.2", "geometry": "bbox"}, ""
    )
    assert (parsed.model, parsed.output, parsed.threshold, parsed.geometry) == (
        "x",
        "labels",
        0.2,
        "bbox",
    )
    for attributes, words in [
        ({}, "model: no model id"),
        ({"model": "m", "output": "mask"}, "output: 'mask'"),
        ({"model": "m", "geometry": "hull"}, "geometry: 'hull'"),
        ({"model": "m", "min_area": "big"}, "must be numbers"),
        ({"model": "m", "min_area": "0"}, "min_area >= 1"),
    ]:
        with pytest.raises(ValueError, match=words):
            Invocation.from_attributes(attributes, "")


def test_tiles_from_npy_and_encoded_formats() -> None:
    assert read_tile(npy(np.ones((5, 6), np.float32))).shape == (1, 5, 6)
    assert read_tile(npy(np.ones((2, 5, 6), np.uint16))).shape == (2, 5, 6)
    assert np.array_equal(read_tile(encode_tile(tile(), "PNG", "NONE")), tile())
    with pytest.raises(ValueError, match="2D or 3D"):
        read_tile(npy(np.ones((1, 1, 5, 6))))
    with pytest.raises(ValueError, match="cannot decode tile"):
        read_tile(b"not an image")


def test_probability_and_label_outputs() -> None:
    found = run(Identity(), Invocation(model="identity", threshold=0.5), tile())["features"]
    assert sorted(f["properties"]["imageBBox"] for f in found) == [
        [10, 10, 30, 20],
        [40, 40, 45, 50],
    ]
    assert found[0]["properties"]["modelMetadata"]["modelId"] == "identity"
    # As a label image: a tile of 255 is one object labelled 1 after the model's /255.
    labels = run(Identity(), Invocation(model="identity", output="labels"), tile() * 0 + 255)
    assert len(labels["features"]) == 1
    with pytest.raises(BackendError, match="channel 3 asked for"):
        run(Identity(), Invocation(model="identity", channel=3), tile())


@pytest.fixture
def server() -> Iterator[str]:
    adapter = AdapterServer(("127.0.0.1", 0), Identity(), "identity")
    thread = threading.Thread(target=adapter.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{adapter.server_address[1]}"
    adapter.shutdown()
    adapter.server_close()


def post(url: str, body: bytes, attributes: str = "") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{url}/invocations",
        data=body,
        headers={"X-Amzn-SageMaker-Custom-Attributes": attributes},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_server_contract(server: str) -> None:
    with urllib.request.urlopen(f"{server}/ping", timeout=10) as reply:
        assert reply.status == 200
    status, document = post(server, encode_tile(tile(), "GTIFF", "NONE"), "min_area=60")
    assert status == 200
    assert document["type"] == "FeatureCollection"
    assert [f["properties"]["imageBBox"] for f in document["features"]] == [[10, 10, 30, 20]]
    assert post(server, npy(tile()), "model=other")[0] == 404
    status, document = post(server, npy(tile()), "threshold=high")
    assert status == 400
    assert "threshold" in document["message"]


class Slow(Identity):
    """Takes at least 20 ms to predict."""

    def predict(self, model_id: str, tile: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        time.sleep(0.02)
        return super().predict(model_id, tile)


def test_replies_say_where_the_time_went() -> None:
    adapter = AdapterServer(("127.0.0.1", 0), Slow(), "identity")
    thread = threading.Thread(target=adapter.serve_forever, daemon=True)
    thread.start()
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{adapter.server_address[1]}/invocations",
            data=npy(tile()),
            method="POST",
        )
        began = time.perf_counter()
        with urllib.request.urlopen(request, timeout=10) as reply:
            header = reply.headers["Server-Timing"]
            assert len(json.loads(reply.read())["features"]) == 2
        latency = time.perf_counter() - began
    finally:
        adapter.shutdown()
        adapter.server_close()
    timings = parse_server_timing(header)
    assert list(timings) == ["decode", "predict", "vectorise", "json"]
    assert timings["predict"] >= 0.02  # the backend's sleep
    assert all(seconds >= 0 for seconds in timings.values())
    assert sum(timings.values()) <= latency  # all within the request the client saw
    assert parse_server_timing(server_timing(timings)) == pytest.approx(timings, abs=1e-6)
    assert parse_server_timing('miss, db;dur=53;desc="x", total;dur=1.5') == {
        "db": 0.053,
        "total": 0.0015,
    }
