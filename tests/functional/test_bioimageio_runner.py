"""The model-runner API for a local collection, and the remote backend as its client.

The API runs in a real HTTP server on loopback with a real model package; uploads and results
are presigned URLs to the moto server. The remote backend talks to it exactly as it would talk
to the public service.
"""

import io
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from threading import Thread
from typing import Any

import boto3
import numpy as np
import numpy.typing as npt
import pytest
import urllib3

from infra.local_stack import LocalStack
from models.bioimageio.adapter import API_PREFIX, AdapterServer, BackendError, UnknownModelError
from models.bioimageio.errors import UploadExpiredError
from models.bioimageio.local import LocalBackend
from models.bioimageio.remote import RemoteBackend
from models.bioimageio.runner_api import ModelRunnerApi, UploadStore
from models.bioimageio.samples import write_sample_package
from models.bioimageio.wire import decode_array

pytestmark = [
    pytest.mark.functional,
    # bioimageio.spec leaves package files open when it loads them.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

BUCKET = "model-runner-temp"
http = urllib3.PoolManager()


def expected(tile: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """What the sample model computes for a one-band tile."""
    return (1 / (1 + np.exp(-(tile.astype(np.float64) / 255 - 0.5)))).astype(np.float32)


def discs(rows: int = 100, cols: int = 70) -> npt.NDArray[np.uint8]:
    yy, xx = np.mgrid[:rows, :cols]
    tile = np.full((1, rows, cols), 20, dtype=np.uint8)
    tile[0][(yy - 30) ** 2 + (xx - 20) ** 2 < 100] = 230
    tile[0][(yy - 70) ** 2 + (xx - 50) ** 2 < 64] = 250
    return tile


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> LocalBackend:
    package = write_sample_package(tmp_path_factory.mktemp("bright"))
    return LocalBackend({"bright": str(package)}, "onnx")


@pytest.fixture(scope="module")
def s3(local_stack: LocalStack) -> Any:
    client = boto3.client("s3", endpoint_url=local_stack.endpoint_url)
    client.create_bucket(Bucket=BUCKET)
    return client


@contextmanager
def serving(
    backend: LocalBackend,
    s3: Any,
    ttl_s: float = 3600,
    asynchronous: bool = False,
    token: str | None = None,
) -> Iterator[str]:
    """The API on a loopback port; its base URL."""
    api = ModelRunnerApi(backend, UploadStore(BUCKET, ttl_s=ttl_s, s3=s3), asynchronous)
    server = AdapterServer(("127.0.0.1", 0), backend, "bright", api=api, token=token)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{API_PREFIX}"
    finally:
        server.shutdown()
        server.server_close()
        api.close()


@pytest.fixture(scope="module")
def api(backend: LocalBackend, s3: Any) -> Iterator[str]:
    with serving(backend, s3) as url:
        yield url


def get(url: str, **fields: str) -> tuple[int, Any]:
    response = http.request("GET", url, fields=fields)
    return response.status, json.loads(response.data)


def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    response = http.request("POST", url, json=body)
    return response.status, json.loads(response.data)


def upload(api: str, data: bytes, file_type: str = ".npy") -> str:
    status, info = get(f"{api}/get_upload_url", file_type=file_type)
    assert status == 200, info
    assert http.request("PUT", info["upload_url"], body=data).status == 200
    path: str = info["file_path"]
    return path


def npy(array: npt.NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_collection_methods(api: str) -> None:
    assert get(f"{api}/search_models", keywords="segmentation,TEST", limit="5") == (
        200,
        [{"model_id": "bright", "description": "Probability that a pixel is bright"}],
    )
    assert get(f"{api}/search_models", keywords="nuclei") == (200, [])
    status, detail = get(f"{api}/search_models", limit="500")
    assert status == 400
    assert "limit" in detail["detail"]
    status, rdf = get(f"{api}/get_model_rdf", model_id="bright")
    assert status == 200
    assert rdf["name"] == "bright-objects"
    assert [axis["type"] for axis in rdf["inputs"][0]["axes"]] == [
        "batch",
        "channel",
        "space",
        "space",
    ]
    status, detail = get(f"{api}/get_model_rdf", model_id="nuclei-finder")
    assert status == 404
    assert "nuclei-finder" in detail["detail"]
    status, detail = get(f"{api}/get_upload_url", file_type=".exe")
    assert (status, detail["success"]) == (400, False)
    assert "file_type" in detail["detail"]
    status, detail = get(f"{api}/no_such_method")
    assert status == 404
    assert "infer" in detail["detail"]


def test_infer_inline_and_by_download_url(api: str) -> None:
    tile = discs(64, 80).astype(np.float32)[np.newaxis]  # (batch, channel, y, x)
    path = upload(api, npy(tile))
    status, result = post(f"{api}/infer", {"model_id": "bright", "inputs": path})
    assert status == 200, result
    output = decode_array(result["output"])
    assert output.shape == (1, 1, 64, 80)
    np.testing.assert_allclose(output[0], expected(tile[0]), atol=1e-6)
    status, result = post(
        f"{api}/infer",
        {"model_id": "bright", "inputs": {"input": path}, "return_download_url": True},
    )
    assert status == 200, result
    downloaded = np.load(io.BytesIO(http.request("GET", result["output"]).data))
    np.testing.assert_array_equal(downloaded, output)


def test_images_can_be_uploaded_too(api: str) -> None:
    from tiling.encode import encode_tile  # noqa: PLC0415

    tile = discs(48, 64)
    path = upload(api, encode_tile(tile, "PNG", "NONE"), ".png")
    status, result = post(f"{api}/infer", {"model_id": "bright", "inputs": path})
    assert status == 200, result
    np.testing.assert_allclose(decode_array(result["output"])[0], expected(tile), atol=1e-6)


@pytest.mark.parametrize(
    ("array", "data", "status", "message"),
    [
        (np.zeros((1, 3, 64, 64), np.float32), None, 400, "takes 1 channel"),
        (np.zeros((1, 1, 8, 64), np.float32), None, 400, "the model needs at least 16"),
        (np.zeros((64, 64), np.float32), None, 400, "expected 4 dimensions"),
        (None, b"\x93NUMPY garbage", 400, "not a readable .npy"),
    ],
)
def test_bad_inputs_are_refused_and_the_server_goes_on(
    api: str, array: Any, data: bytes | None, status: int, message: str
) -> None:
    path = upload(api, npy(array) if data is None else data)
    got, detail = post(f"{api}/infer", {"model_id": "bright", "inputs": path})
    assert got == status
    assert message in detail["detail"]
    good = upload(api, npy(np.zeros((1, 1, 16, 16), np.float32)))
    assert post(f"{api}/infer", {"model_id": "bright", "inputs": good})[0] == 200


def test_inputs_must_come_from_get_upload_url(api: str, s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="private/secret.npy", Body=npy(np.zeros((1, 1, 16, 16))))
    for inputs, message in [
        ("private/secret.npy", "not a file path from get_upload_url"),
        ("temp/../private/secret.npy", "not a file path from get_upload_url"),
        ("http://169.254.169.254/latest/x.npy", "fetches no URLs"),
        (f"temp/{'0' * 32}.npy", "nothing was uploaded"),
    ]:
        status, detail = post(f"{api}/infer", {"model_id": "bright", "inputs": inputs})
        assert status in {400, 404}
        assert message in detail["detail"], detail
    status, detail = post(f"{api}/infer", {"model_id": "bright", "inputs": "x", "device": "tpu"})
    assert status == 400
    assert "device" in detail["detail"]


def test_the_sample_package_validates_and_passes_the_test_suite(api: str) -> None:
    status, rdf = get(f"{api}/get_model_rdf", model_id="bright")
    assert status == 200
    status, result = post(f"{api}/validate", {"rdf_dict": rdf})
    assert status == 200
    assert result["success"] is True, result["details"]
    status, result = post(f"{api}/validate", {"rdf_dict": {"type": "model", "name": "x"}})
    assert status == 200
    assert result["success"] is False
    assert "format_version" in result["details"] or "missing" in result["details"].lower()
    status, report = post(f"{api}/test", {"model_id": "bright"})
    assert status == 200
    assert report["status"] == "passed", report


def test_remote_backend_matches_the_local_one(api: str, backend: LocalBackend) -> None:
    remote = RemoteBackend(api)
    tile = np.concatenate([discs(), discs()[:, ::-1]])  # two bands, odd size: padded, averaged
    np.testing.assert_allclose(
        remote.predict("bright", tile), backend.predict("bright", tile), atol=1e-6
    )
    assert remote.metadata("bright")["modelName"] == "bright-objects"
    with pytest.raises(UnknownModelError, match="nuclei-finder"):
        remote.predict("nuclei-finder", tile)


def test_remote_backend_with_the_asynchronous_infer(backend: LocalBackend, s3: Any) -> None:
    with serving(backend, s3, asynchronous=True) as url:
        tile = discs(40, 33)
        remote = RemoteBackend(url, poll_interval_s=0.05)
        np.testing.assert_allclose(remote.predict("bright", tile)[0], expected(tile[0]), atol=1e-6)
        path = upload(url, npy(tile.astype(np.float32)[np.newaxis][..., :32, :32]))
        status, request_id = post(f"{url}/infer", {"model_id": "bright", "inputs": path})
        assert status == 200
        assert isinstance(request_id, str)
        for _ in range(100):
            status, progress = get(f"{url}/get_infer_status", request_id=request_id)
            if progress["completed_at"]:
                break
            time.sleep(0.05)
        assert progress["queue_position"] == 0
        assert progress["submitted_at"] <= progress["started_at"] <= progress["completed_at"]
        assert decode_array(progress["result"]["output"]).shape == (1, 1, 32, 32)
        assert get(f"{url}/get_infer_status", request_id="nope")[0] == 404


def test_expired_uploads(backend: LocalBackend, s3: Any) -> None:
    with serving(backend, s3, ttl_s=0.001) as url:
        path = upload(url, npy(np.zeros((1, 1, 16, 16), np.float32)))
        status, detail = post(f"{url}/infer", {"model_id": "bright", "inputs": path})
        assert status == 410
        assert "expired" in detail["detail"]
        assert "get_upload_url" in detail["detail"]
        with pytest.raises(UploadExpiredError, match="expired"):
            RemoteBackend(url).predict("bright", discs())


def test_bearer_token(backend: LocalBackend, s3: Any) -> None:
    with serving(backend, s3, token="s3cret") as url:
        assert get(f"{url}/search_models")[0] == 401
        with pytest.raises(BackendError, match="refused the credentials"):
            RemoteBackend(url, token="wrong").predict("bright", discs())
        tile = discs()
        np.testing.assert_allclose(
            RemoteBackend(url, token="s3cret").predict("bright", tile)[0],
            expected(tile[0]),
            atol=1e-6,
        )


def test_service_errors_are_retried_then_reported(tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: PLC0415

    calls: list[str] = []

    class Failing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            calls.append(self.path)
            body = b'{"detail": "the cluster is scaling up"}'
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = RemoteBackend(f"http://127.0.0.1:{server.server_address[1]}", backoff_s=0.01)
        with pytest.raises(BackendError, match="HTTP 503: the cluster is scaling up"):
            remote.predict("bright", discs())
    finally:
        server.shutdown()
        server.server_close()
    assert len(calls) == 4  # the first try and 3 retries
