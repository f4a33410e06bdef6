"""One request through the whole path, as a user sees it: S3, Kinesis, SNS, DynamoDB."""

import json
import math
import signal
from pathlib import Path

import boto3
import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS

from tests.functional.helpers import Stack, write_geotiff
from tests.tiling.test_sensor_models import RPCS
from tiling.sensor import RpcSensorModel
from worker.adapters.variants import choose_variant

pytestmark = pytest.mark.functional

UTM = CRS.from_epsg(32618)
TRANSFORM = Affine(0.5, 0.0, 583000.0, 0.0, -0.5, 4507000.0)


def grid_count(length: int, tile: int, overlap: int) -> int:
    return max(1, math.ceil((length - overlap) / (tile - overlap)))


def test_geotiff_job(stack: Stack, tmp_path: Path) -> None:
    width, height = 1500, 1100
    pixels = np.random.default_rng(1).integers(100, 255, (3, height, width), dtype=np.uint8)
    image_url = stack.upload(write_geotiff(tmp_path / "utm.tif", pixels, TRANSFORM, UTM))
    request = stack.request(
        image_url,
        imageProcessorTileFormat="GTIFF",
        outputs=[
            {"type": "S3", "bucket": stack.local.resources.bucket, "prefix": "out"},
            {"type": "Kinesis", "stream": stack.local.resources.stream, "batchSize": 5},
        ],
        featureProperties=[{"mission": "functional"}],
    )
    job_id = request["jobId"]
    stack.submit(json.dumps(request))
    statuses = stack.statuses.wait_terminal(job_id)
    expected_tiles = grid_count(width, 512, 64) * grid_count(height, 512, 64)
    assert expected_tiles == 12

    assert statuses[0].attributes["status"] == "STARTED"
    final = statuses[-1]
    assert final.message.startswith(f"StatusMonitor update: SUCCESS {job_id}: ")
    assert final.attributes["job_id"] == job_id
    assert final.attributes["image_id"] == f"{job_id}:{image_url}"
    assert final.attributes["image_status"] == "SUCCESS"
    assert final.attributes["failed_tiles"] == "[]"
    assert final.attributes["failed_tile_count"] == "0"
    assert int(final.attributes["processing_duration"]) > 0  # milliseconds

    features = stack.result(job_id)["features"]
    assert len(features) == expected_tiles  # one centre box per tile, none overlap
    to_wgs84 = Transformer.from_crs(32618, 4326, always_xy=True)
    for feature in features:
        minx, miny, maxx, maxy = feature["properties"]["imageBBox"]
        assert 0 <= minx < maxx <= width
        assert 0 <= miny < maxy <= height
        assert maxx - minx == pytest.approx(102.4)  # +-10% of the 512 px tile
        x, y = TRANSFORM @ ((minx + maxx) / 2, (miny + maxy) / 2)
        lon, lat = to_wgs84.transform(x, y)
        assert feature["properties"]["center_longitude"] == pytest.approx(lon, abs=1e-7)
        assert feature["properties"]["center_latitude"] == pytest.approx(lat, abs=1e-7)
        assert feature["properties"]["mission"] == "functional"
        assert feature["properties"]["inferenceMetadata"]["jobId"] == job_id
        assert feature["properties"]["featureClasses"] == [{"iri": "sample_object", "score": 1.0}]

    records = stack.kinesis_records(job_id)
    assert {r["partition_key"] for r in records} == {job_id}
    assert all(r["data"]["type"] == "FeatureCollection" for r in records)
    assert all(len(r["data"]["features"]) <= 5 for r in records)
    assert sum(len(r["data"]["features"]) for r in records) == expected_tiles

    record = stack.job_record(job_id, image_url)
    assert record["status"] == "SUCCESS"
    assert int(record["tile_count"]) == expected_tiles
    assert int(record["feature_count"]) == expected_tiles
    assert int(record["failed_tiles"]) == 0


def test_failed_tiles_make_a_partial_image(stack: Stack, tmp_path: Path) -> None:
    pixels = np.full((1, 512, 1024), 200, dtype=np.uint8)
    pixels[:, :, :512] = 40  # the failure model answers HTTP 400 for this tile
    image_url = stack.upload(write_geotiff(tmp_path / "half.tif", pixels, TRANSFORM, UTM))
    request = stack.request(
        image_url,
        imageProcessorTileOverlap=0,
        imageProcessorParameters={"CustomAttributes": "model_selection=failure"},
    )
    stack.submit(json.dumps(request))
    final = stack.statuses.wait_terminal(request["jobId"])[-1]
    assert final.attributes["status"] == "PARTIAL"
    assert final.attributes["failed_tile_count"] == "1"
    assert json.loads(final.attributes["failed_tiles"]) == [[[0, 0], [512, 512]]]
    (feature,) = stack.result(request["jobId"])["features"]
    assert feature["properties"]["imageBBox"][0] > 512


def test_sigterm_stops_a_worker_cleanly(stack: Stack) -> None:
    extra = stack.local.start_worker("worker-sigterm")
    try:
        stack.local.wait_for_log("worker-sigterm", "worker polling")
    finally:
        extra.send_signal(signal.SIGTERM)
    assert extra.wait(30) == 0


def test_outputs_under_assumed_roles(stack: Stack, tmp_path: Path) -> None:
    pixels = np.full((1, 300, 300), 150, dtype=np.uint8)
    image_url = stack.upload(write_geotiff(tmp_path / "roles.tif", pixels, TRANSFORM, UTM))
    request = stack.request(
        image_url,
        outputs=[
            {
                "type": "S3",
                "bucket": stack.local.resources.bucket,
                "prefix": "roles",
                "role": "arn:aws:iam::123456789012:role/result-writer",
            },
            {
                "type": "Kinesis",
                "stream": stack.local.resources.stream,
                "assumedRole": "arn:aws:iam::123456789012:role/stream-writer",
            },
        ],
    )
    stack.submit(json.dumps(request))
    assert stack.statuses.wait_terminal(request["jobId"])[-1].attributes["status"] == "SUCCESS"
    assert len(stack.result(request["jobId"], prefix="roles")["features"]) == 1
    assert len(stack.kinesis_records(request["jobId"])) == 1
    log_text = (stack.local.log_dir / "worker.log").read_text()
    assert "using role arn:aws:iam::123456789012:role/result-writer for s3" in log_text


def test_sagemaker_endpoint_job(stack: Stack, tmp_path: Path) -> None:
    pixels = np.full((1, 600, 600), 150, dtype=np.uint8)
    image_url = stack.upload(write_geotiff(tmp_path / "sm.tif", pixels, TRANSFORM, UTM))
    request = stack.request(
        image_url,
        imageProcessor={
            "name": "centerpoint",
            "type": "SM_ENDPOINT",
            "assumedRole": "arn:aws:iam::123456789012:role/model-invoker",
        },
        imageProcessorTileFormat="PNG",
    )
    stack.submit(json.dumps(request))
    final = stack.statuses.wait_terminal(request["jobId"])[-1]
    assert final.attributes["status"] == "SUCCESS"
    features = stack.result(request["jobId"])["features"]
    assert len(features) == grid_count(600, 512, 64) ** 2
    log_text = (stack.local.log_dir / "worker.log").read_text()
    assert (
        "using role arn:aws:iam::123456789012:role/model-invoker for sagemaker-runtime" in log_text
    )


def test_sagemaker_model_errors_fail_tiles(stack: Stack, tmp_path: Path) -> None:
    pixels = np.full((1, 512, 1024), 200, dtype=np.uint8)
    pixels[:, :, :512] = 40  # the failure model answers HTTP 400: SageMaker's ModelError
    image_url = stack.upload(write_geotiff(tmp_path / "smfail.tif", pixels, TRANSFORM, UTM))
    request = stack.request(
        image_url,
        imageProcessor={"name": "failure", "type": "SM_ENDPOINT"},
        imageProcessorTileOverlap=0,
    )
    stack.submit(json.dumps(request))
    final = stack.statuses.wait_terminal(request["jobId"])[-1]
    assert final.attributes["status"] == "PARTIAL"
    assert final.attributes["failed_tile_count"] == "1"
    log_text = (stack.local.log_dir / "worker.log").read_text()
    assert "ModelError" in log_text
    assert "synthetic bad request" in log_text


def test_throttled_endpoint_is_retried_after_retry_after(stack: Stack, tmp_path: Path) -> None:
    pixels = np.full((1, 256, 256), 77, dtype=np.uint8)
    image_url = stack.upload(write_geotiff(tmp_path / "throttle.tif", pixels, TRANSFORM, UTM))
    request = stack.request(
        image_url,
        imageProcessorParameters={
            "CustomAttributes": "model_selection=throttle,throttle_count=2,retry_after=1"
        },
    )
    stack.submit(json.dumps(request))
    final = stack.statuses.wait_terminal(request["jobId"])[-1]
    assert final.attributes["status"] == "SUCCESS"
    assert int(final.attributes["processing_duration"]) >= 2000  # two Retry-After waits (ms)
    assert len(stack.result(request["jobId"])["features"]) == 1


def test_multi_variant_endpoint_gets_a_weighted_variant_per_job(
    stack: Stack, tmp_path: Path
) -> None:
    session = boto3.session.Session(region_name="us-east-1")
    sagemaker = session.client("sagemaker", endpoint_url=stack.local.endpoint_url)
    sagemaker.create_model(
        ModelName="centerpoint-model",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/sagemaker",
        PrimaryContainer={"Image": "centerpoint"},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName="centerpoint-config",
        ProductionVariants=[
            {
                "VariantName": name,
                "ModelName": "centerpoint-model",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.xlarge",
                "InitialVariantWeight": weight,
            }
            for name, weight in (("blue", 3.0), ("green", 1.0))
        ],
    )
    sagemaker.create_endpoint(EndpointName="centerpoint", EndpointConfigName="centerpoint-config")
    pixels = np.full((1, 256, 256), 150, dtype=np.uint8)
    image_url = stack.upload(write_geotiff(tmp_path / "variant.tif", pixels, TRANSFORM, UTM))
    request = stack.request(
        image_url, imageProcessor={"name": "centerpoint", "type": "SM_ENDPOINT"}
    )
    stack.submit(json.dumps(request))
    assert stack.statuses.wait_terminal(request["jobId"])[-1].attributes["status"] == "SUCCESS"
    expected = choose_variant([("blue", 3.0), ("green", 1.0)], request["jobId"])
    log_text = (stack.local.log_dir / "worker.log").read_text()
    assert f"job {request['jobId']}: endpoint centerpoint variant {expected}" in log_text


def roi_wkt(cols: list[float], rows: list[float]) -> str:
    to_wgs84 = Transformer.from_crs(32618, 4326, always_xy=True)
    points = [to_wgs84.transform(*(TRANSFORM @ (c, r))) for c, r in zip(cols, rows, strict=True)]
    return "POLYGON((" + ", ".join(f"{x!r} {y!r}" for x, y in [*points, points[0]]) + "))"


def test_region_of_interest(stack: Stack, tmp_path: Path) -> None:
    pixels = np.full((1, 2048, 2048), 150, dtype=np.uint8)
    image_url = stack.upload(write_geotiff(tmp_path / "roi.tif", pixels, TRANSFORM, UTM))
    roi = roi_wkt([100, 700, 700, 100], [100, 100, 700, 700])
    request = stack.request(image_url, regionOfInterest=roi)
    stack.submit(json.dumps(request))
    assert stack.statuses.wait_terminal(request["jobId"])[-1].attributes["status"] == "SUCCESS"
    assert int(stack.job_record(request["jobId"], image_url)["tile_count"]) == 4  # 2 x 2 over ROI
    features = stack.result(request["jobId"])["features"]
    assert len(features) == 4
    for feature in features:
        minx, miny, maxx, maxy = feature["properties"]["imageBBox"]
        assert 100 <= minx < maxx <= 700
        assert 100 <= miny < maxy <= 700

    outside = stack.request(
        image_url, regionOfInterest=roi_wkt([5000, 5600, 5600, 5000], [0, 0, 600, 600])
    )
    stack.submit(json.dumps(outside))
    final = stack.statuses.wait_terminal(outside["jobId"])[-1]
    assert final.attributes["status"] == "FAILED"
    assert "regionOfInterest does not overlap the image" in final.message


def test_rpc_image_is_geolocated_with_its_rpcs(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "rpc.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=1024, height=1024, count=1, dtype="uint8", rpcs=RPCS
    ) as dst:
        dst.write(np.full((1, 1024, 1024), 60, np.uint8))
    request = stack.request(
        stack.upload(path), imageProcessorTileSize=512, imageProcessorTileOverlap=0
    )
    stack.submit(json.dumps(request))
    assert stack.statuses.wait_terminal(request["jobId"])[-1].attributes["status"] == "SUCCESS"
    features = stack.result(request["jobId"])["features"]
    assert len(features) == 4
    model = RpcSensorModel(RPCS)
    for feature in features:
        ring = np.array(feature["properties"]["imageGeometry"]["coordinates"][0], dtype=float)
        lons, lats = model.image_to_world(ring[:, 0], ring[:, 1])
        world = np.array(feature["geometry"]["coordinates"][0], dtype=float)
        assert np.abs(world[:, 0] - lons).max() < 1e-7
        assert np.abs(world[:, 1] - lats).max() < 1e-7
        np.testing.assert_array_equal(world[:, 2], RPCS.height_off)  # where the RPC put them
