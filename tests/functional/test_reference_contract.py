"""The reference implementation's own integration cases, run black box against ModelRunner.

The model is a plain ``http.server`` shaped like the reference's centerpoint test container
(tests/functional/reference_model.py); the requests are the ones the reference's integration
runner sends (tile 512, overlap 128, GTIFF tiles, NMS 0.75, an S3 and a Kinesis output). The
expected features are computed here, independently of the worker, from the rules the reference
follows: the model's outline and box moved by the tile origin, the outline geolocated vertex by
vertex (elevation 0 without a DEM), the centre the outline's pixel centroid geolocated, the
model's ``featureClasses``, ``modelMetadata`` and ``id`` unchanged, ``sourceMetadata`` for NITF.
They are compared the way the reference's validator compares (world coordinates rounded to 6
decimals, centres within 1e-8 degrees) and beyond it (``id``, ``imageBBox``, ``bbox``).
"""

import json
import math
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS

from infra.local_stack import SAMPLE_IMAGE, free_port, wait_until_up
from tests.functional.helpers import Stack, write_geotiff
from tests.functional.reference_model import centre_box, hexagon

pytestmark = pytest.mark.functional

TILE, OVERLAP = 512, 128
INFERENCE_DT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@dataclass
class ReferenceModel:
    url: str
    ids_file: Path

    def ids(self) -> set[str]:
        return set(self.ids_file.read_text().split()) if self.ids_file.exists() else set()


@pytest.fixture(scope="module")
def reference_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceModel]:
    folder = tmp_path_factory.mktemp("reference-model")
    port = free_port()
    ids_file = folder / "ids.txt"
    with (folder / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.functional.reference_model"),
                *("--port", str(port), "--ids-file", str(ids_file)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping")
        yield ReferenceModel(f"http://127.0.0.1:{port}/invocations", ids_file)
    finally:
        process.terminate()
        process.wait(10)


def reference_request(
    stack: Stack, image_url: str, model: ReferenceModel, **extra: Any
) -> dict[str, Any]:
    """The request the reference's integration runner sends."""
    job_id = uuid.uuid4().hex
    request: dict[str, Any] = {
        "jobId": job_id,
        "jobName": f"test-{job_id}",
        "imageUrls": [image_url],
        "outputs": [
            {"type": "S3", "bucket": stack.local.resources.bucket, "prefix": f"test-{job_id}/"},
            {"type": "Kinesis", "stream": stack.local.resources.stream, "batchSize": 1000},
        ],
        "imageProcessor": {"name": model.url, "type": "HTTP_ENDPOINT"},
        "imageProcessorParameters": {"CustomAttributes": "model_selection=centerpoint"},
        "imageProcessorTileSize": TILE,
        "imageProcessorTileOverlap": OVERLAP,
        "imageProcessorTileFormat": "GTIFF",
        "imageProcessorTileCompression": "NONE",
        "postProcessing": [
            {
                "step": "FEATURE_DISTILLATION",
                "algorithm": {"algorithmType": "NMS", "iouThreshold": 0.75},
            }
        ],
        "regionOfInterest": None,
    }
    request.update(extra)
    return request


def run_job(
    stack: Stack, request: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Submit, wait for SUCCESS; the S3 features and the Kinesis features of the job."""
    job_id = request["jobId"]
    stack.submit(json.dumps(request))
    final = stack.statuses.wait_terminal(job_id, timeout_s=180)[-1]
    assert final.attributes["status"] == "SUCCESS", final.message
    s3 = stack.result(job_id, prefix=f"test-{job_id}")["features"]
    kinesis = [f for record in stack.kinesis_records(job_id) for f in record["data"]["features"]]
    return s3, kinesis


def origins(length: int) -> list[int]:
    """Tile origins on one axis, for lengths where the reference's grid and ours coincide:
    the fewest tiles with at least the overlap, spread evenly, where the spread is whole."""
    count = math.ceil((length - OVERLAP) / (TILE - OVERLAP))
    stride, rest = divmod(length - TILE, count - 1)
    assert rest == 0, "choose a size the reference tiles without edge loss"
    return [i * stride for i in range(count)]


def to_world(transform: Affine, crs: CRS) -> Any:
    to_wgs84 = Transformer.from_crs(crs.to_wkt(), "EPSG:4326", always_xy=True)

    def project(xy: np.ndarray) -> np.ndarray:
        a, b, c, d, e, f = transform[:6]
        xs, ys = a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f
        lons, lats = to_wgs84.transform(xs, ys)
        return np.column_stack((lons, lats))

    return project


def expected_features(
    width: int, height: int, transform: Affine, crs: CRS
) -> dict[str, dict[str, Any]]:
    """What the reference writes for every tile, keyed by the outline's text."""
    project = to_world(transform, crs)
    expected = {}
    for row in origins(height):
        for col in origins(width):
            outline = [[x + col, y + row] for x, y in hexagon(TILE, TILE)]
            minx, miny, maxx, maxy = centre_box(TILE, TILE)
            box = [minx + col, miny + row, maxx + col, maxy + row]
            world = project(np.asarray(outline))
            centre = project(shapely.get_coordinates(shapely.Polygon(outline).centroid))[0]
            x0, y0, x1, y1 = box
            corners = project(np.array([[x0, y0], [x0, y1], [x1, y1], [x1, y0]]))
            expected[str(outline)] = {
                "geometry": [[round(lon, 6), round(lat, 6), 0.0] for lon, lat in world],
                "imageBBox": box,
                "bbox": [
                    corners[:, 0].min(),
                    corners[:, 1].min(),
                    corners[:, 0].max(),
                    corners[:, 1].max(),
                ],
                "centre": centre,
            }
    return expected


def check_like_the_reference(
    features: list[dict[str, Any]], expected: dict[str, dict[str, Any]], job_id: str, ids: set[str]
) -> None:
    assert len(features) == len(expected)
    for feature in features:
        props = feature["properties"]
        outline = props["imageGeometry"]["coordinates"][0]
        want = expected[str(outline)]
        geometry = feature["geometry"]
        assert geometry["type"] == "Polygon"
        assert [[round(v, 6) for v in point] for point in geometry["coordinates"][0]] == want[
            "geometry"
        ]
        assert math.isclose(props["center_longitude"], want["centre"][0], abs_tol=1e-8)
        assert math.isclose(props["center_latitude"], want["centre"][1], abs_tol=1e-8)
        assert props["featureClasses"] == [{"iri": "sample_object", "score": 1.0}]
        assert props["modelMetadata"] == {
            "modelName": "centerpoint",
            "ontologyName": "centerpoint",
            "ontologyVersion": "1.0.0",
        }
        assert props["inferenceMetadata"]["jobId"] == job_id
        assert INFERENCE_DT.match(props["inferenceMetadata"]["inferenceDT"])
        # Beyond the reference's validator: the model's id and box are kept, bbox is the box's.
        assert feature["id"] in ids
        assert props["imageBBox"] == pytest.approx(want["imageBBox"], abs=1e-9)
        assert feature["bbox"] == pytest.approx(want["bbox"], abs=1e-9)
        assert "image_id" not in props
    assert len({f["id"] for f in features}) == len(features)


def test_centerpoint_with_segmentation_on_a_geotiff(
    stack: Stack, reference_model: ReferenceModel, tmp_path: Path
) -> None:
    width, height = 2048, 1664  # 5 x 4 tiles, the same grid in both implementations
    transform = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_500_000.0)
    crs = CRS.from_epsg(32618)
    pixels = np.random.default_rng(7).integers(0, 255, (3, height, width), dtype=np.uint8)
    image = write_geotiff(tmp_path / "small.tif", pixels, transform, crs)
    request = reference_request(stack, stack.upload(image), reference_model)
    s3, kinesis = run_job(stack, request)
    expected = expected_features(width, height, transform, crs)
    check_like_the_reference(s3, expected, request["jobId"], reference_model.ids())
    assert "sourceMetadata" not in s3[0]["properties"]
    assert sorted(kinesis, key=lambda f: f["id"]) == sorted(s3, key=lambda f: f["id"])


def test_centerpoint_with_segmentation_on_the_jitc_nitf(
    stack: Stack, reference_model: ReferenceModel
) -> None:
    with rasterio.open(SAMPLE_IMAGE) as src:
        width, height, transform, crs, tags = (
            src.width,
            src.height,
            src.transform,
            src.crs,
            src.tags(),
        )
    image_url = stack.upload(SAMPLE_IMAGE)
    request = reference_request(stack, image_url, reference_model)
    s3, kinesis = run_job(stack, request)
    check_like_the_reference(
        s3,
        expected_features(width, height, transform, crs),
        request["jobId"],
        reference_model.ids(),
    )
    for feature in s3:
        assert feature["properties"]["sourceMetadata"] == [
            {
                "format": "NITF",
                "category": "VIS",
                "sourceId": tags["NITF_FTITLE"].strip(),
                "sourceDT": "1996-12-17T10:26:30Z",
                "location": image_url,
            }
        ]
    assert sorted(kinesis, key=lambda f: f["id"]) == sorted(s3, key=lambda f: f["id"])


def test_point_detections_keep_their_box(
    stack: Stack, reference_model: ReferenceModel, tmp_path: Path
) -> None:
    # Segmentation off: the reference model's outline is the point [0, 0] of each tile, its
    # detection the box around the centre. The request's featureProperties win over the
    # model's properties of the same name.
    transform = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_500_000.0)
    crs = CRS.from_epsg(32618)
    image = write_geotiff(
        tmp_path / "points.tif", np.full((1, 1024, 1024), 90, np.uint8), transform, crs
    )
    request = reference_request(
        stack,
        stack.upload(image),
        reference_model,
        imageProcessorParameters={"CustomAttributes": "segmentation=false"},
        featureProperties=[{"modelMetadata": {"modelName": "renamed"}, "mission": "m-1"}],
    )
    s3, _ = run_job(stack, request)
    project = to_world(transform, crs)
    assert len(s3) == 9
    for feature in s3:
        props = feature["properties"]
        col, row = props["imageGeometry"]["coordinates"]
        assert (col, row) in {(c, r) for c in origins(1024) for r in origins(1024)}
        assert feature["geometry"]["type"] == "Point"
        minx, miny, maxx, maxy = props["imageBBox"]
        assert (minx, miny, maxx, maxy) == pytest.approx(
            (col + 204.8, row + 204.8, col + 307.2, row + 307.2)
        )
        corners = project(np.array([[minx, miny], [minx, maxy], [maxx, maxy], [maxx, miny]]))
        assert feature["bbox"] == pytest.approx(
            [corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()],
            abs=1e-9,
        )
        assert feature["bbox"][2] - feature["bbox"][0] > 0  # a box, not a point
        assert props["modelMetadata"] == {"modelName": "renamed"}
        assert props["mission"] == "m-1"


def test_legacy_property_names(
    stack: Stack, reference_model: ReferenceModel, tmp_path: Path
) -> None:
    transform = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_500_000.0)
    image = write_geotiff(
        tmp_path / "legacy.tif",
        np.full((1, 1024, 1024), 90, np.uint8),
        transform,
        CRS.from_epsg(32618),
    )
    request = reference_request(
        stack,
        stack.upload(image),
        reference_model,
        imageProcessorParameters={"CustomAttributes": "legacy=true,ids=none"},
    )
    s3, _ = run_job(stack, request)
    assert len(s3) == 9
    for feature in s3:
        props = feature["properties"]
        minx, miny, maxx, maxy = props["imageBBox"]
        assert props["imageGeometry"]["type"] == "Polygon"
        assert shapely.geometry.shape(props["imageGeometry"]).bounds == pytest.approx(
            (minx, miny, maxx, maxy)
        )
        assert props["featureClasses"] == [{"iri": "sample_object", "score": 1.0}]
        for legacy in (
            "bounds_imcoords",
            "geom_imcoords",
            "feature_types",
            "detection_score",
            "image_id",
        ):
            assert legacy not in props
        assert re.fullmatch(r"[0-9a-f]{32}", feature["id"])  # none from the model: a stable one
    assert len({f["id"] for f in s3}) == 9
    # The same job run again (a new message) gives every detection the same id.
    stack.submit(json.dumps(request))
    final = stack.statuses.wait_terminal(request["jobId"], count=2, timeout_s=180)[-1]
    assert final.attributes["status"] == "SUCCESS", final.message
    again = stack.result(request["jobId"], prefix=f"test-{request['jobId']}")["features"]
    by_outline = {str(f["properties"]["imageGeometry"]): f["id"] for f in s3}
    assert {str(f["properties"]["imageGeometry"]): f["id"] for f in again} == by_outline


def test_processor_type_and_post_processing_defaults(stack: Stack, tmp_path: Path) -> None:
    # No imageProcessor.type: a SageMaker endpoint (here the local runtime router's "flood").
    # postProcessing [] applies the default NMS, as the reference does; NONE switches it off.
    transform = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_500_000.0)
    pixels = np.random.default_rng(3).integers(0, 255, (1, 1024, 1024), dtype=np.uint8)
    image = stack.upload(
        write_geotiff(tmp_path / "flood.tif", pixels, transform, CRS.from_epsg(32618))
    )
    counts = {}
    for name, steps in (
        ("default", []),
        ("off", [{"step": "FEATURE_DISTILLATION", "algorithm": {"algorithmType": "NONE"}}]),
    ):
        request = stack.request(
            image,
            imageProcessor={"name": "flood"},
            imageProcessorParameters={"CustomAttributes": "flood_volume=200,flood_seed=tile"},
            imageProcessorTileSize=512,
            imageProcessorTileOverlap=256,
            postProcessing=steps,
        )
        stack.submit(json.dumps(request))
        final = stack.statuses.wait_terminal(request["jobId"])[-1]
        assert final.attributes["status"] == "SUCCESS", final.message
        counts[name] = len(stack.result(request["jobId"])["features"])
    assert counts["off"] == 9 * 200  # every box of the 9 tiles
    assert counts["default"] < counts["off"]  # duplicates in the overlap bands removed
