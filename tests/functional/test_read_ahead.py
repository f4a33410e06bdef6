"""Read-ahead through the real emulator: how many GETs and bytes a known image costs, and
features identical to GDAL's own reads for every tile format."""

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.shutil

from tests.functional.helpers import Stack, own_worker
from tests.functional.test_end_to_end import TRANSFORM, UTM

pytestmark = pytest.mark.functional

BLOCK_BYTES = 256 * 256 * 3
HEADER_CHUNK_BYTES = 256 << 10


def write_image(path: Path, size: int, seed: int = 3, **options: Any) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (3, size, size), dtype=np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs=UTM,
        transform=TRANSFORM,
        tiled=True,
        **options,
    ) as dst:
        dst.write(pixels)
    return path


def run_job(stack: Stack, queue_url: str, request: dict[str, Any]) -> list[dict[str, Any]]:
    stack.sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(request))
    statuses = stack.statuses.wait_terminal(request["jobId"])
    assert statuses[-1].attributes["status"] == "SUCCESS", statuses[-1].message
    features: list[dict[str, Any]] = stack.result(request["jobId"])["features"]
    return features


def wait_for_line(path: Path, pattern: str, timeout_s: float = 30) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text(errors="replace"))
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} in {path}")


@pytest.fixture(scope="module")
def gdal_worker(stack: Stack) -> Iterator[tuple[Popen[bytes], dict[str, str]]]:
    """A worker whose GDAL reads the images itself, as before the read-ahead."""
    worker, queues = own_worker(stack, "gdal-reads", MODELRUNNER_READ_AHEAD="false")
    yield worker, queues
    worker.terminate()
    worker.wait(timeout=30)


def test_a_known_image_costs_its_planned_gets_and_bytes(stack: Stack, tmp_path: Path) -> None:
    # 2048 x 2048 x 3 uncompressed in 256 px blocks: 64 blocks of 196 608 bytes, 12 MiB. In
    # reads of about 4 MiB cut at block boundaries: 22 + 22 + 20 blocks, 3 GETs; and one GET of
    # 256 KiB for the header GDAL opens first.
    url = stack.upload(write_image(tmp_path / "known.tif", 2048))
    worker, queues = own_worker(stack, "known", MODELRUNNER_READ_RANGE_MB="4")
    try:
        features = run_job(
            stack,
            queues["MODELRUNNER_IMAGE_QUEUE"],
            stack.request(url, imageProcessorTileSize=512, imageProcessorTileOverlap=128),
        )
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert len(features) == 25  # 5 x 5 tiles
    log = next(stack.local.log_dir.glob("worker-known-*.log"))
    found = wait_for_line(log, r"25 tiles read in (\d+) S3 GETs")
    assert int(found.group(1)) == 4
    metrics = [
        json.loads(line)
        for line in log.read_text().splitlines()
        if line.startswith('{"_aws"') and '"S3Gets"' in line
    ]
    assert [m["S3Gets"] for m in metrics] == [4]
    data_bytes = 64 * BLOCK_BYTES
    assert data_bytes + HEADER_CHUNK_BYTES <= metrics[0]["S3BytesRead"]
    assert metrics[0]["S3BytesRead"] <= data_bytes + HEADER_CHUNK_BYTES + 64 * 16  # + margins
    # The emulator saw those 4, and the few GETs GDAL made to plan the image (its header).
    key = url.removeprefix(f"s3://{stack.local.resources.image_bucket}/")
    moto_log = (stack.local.log_dir / "moto.log").read_text(errors="replace")
    gets = moto_log.count(f"GET /{stack.local.resources.image_bucket}/{key}")
    assert 4 < gets <= 4 + 3


def geotiff(path: Path) -> Path:
    return write_image(path, 1300, seed=5)


def deflate_cog(path: Path) -> Path:
    source = write_image(path.with_suffix(".src.tif"), 1300, seed=6)
    rasterio.shutil.copy(source, path, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256)
    return path


def nitf(path: Path) -> Path:
    pixels = np.random.default_rng(7).integers(0, 256, (3, 1100, 1300), dtype=np.uint8)
    path = path.with_suffix(".ntf")
    with rasterio.open(
        path,
        "w",
        driver="NITF",
        width=1300,
        height=1100,
        count=3,
        dtype="uint8",
        crs=UTM,
        transform=TRANSFORM,
        IC="NC",
        ICORDS="N",
    ) as dst:
        dst.write(pixels)
    return path


SOURCES = {"GeoTIFF": geotiff, "DEFLATE COG": deflate_cog, "NITF": nitf}


def comparable(features: list[dict[str, Any]]) -> list[str]:
    """The features without what differs between two jobs (job id, time, ids)."""
    kept = []
    for feature in features:
        properties = {
            k: v for k, v in feature["properties"].items() if k not in ("inferenceMetadata",)
        }
        kept.append(json.dumps([feature["geometry"], properties], sort_keys=True))
    return sorted(kept)


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("tile_format", ["NITF", "GTIFF", "PNG", "JPEG"])
def test_features_are_those_of_gdal_reads(
    stack: Stack,
    gdal_worker: tuple[Popen[bytes], dict[str, str]],
    tmp_path: Path,
    source: str,
    tile_format: str,
) -> None:
    url = stack.upload(SOURCES[source](tmp_path / "image.tif"))
    # The flood model seeds its boxes with the tile's pixels: equal features, equal pixels.
    extra = {
        "imageProcessorTileFormat": tile_format,
        "imageProcessorParameters": {
            "CustomAttributes": "model_selection=flood,flood_volume=3,flood_seed=tile"
        },
    }
    read_ahead = run_job(stack, stack.local.resources.image_queue_url, stack.request(url, **extra))
    gdal = run_job(stack, gdal_worker[1]["MODELRUNNER_IMAGE_QUEUE"], stack.request(url, **extra))
    assert len(read_ahead) >= 12  # 3 x 3 tiles, 3 boxes each, less duplicates
    assert comparable(read_ahead) == comparable(gdal)
