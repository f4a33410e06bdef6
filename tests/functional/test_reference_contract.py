"""The reference implementation's own integration cases, run black box against ModelRunner.

The model is a plain ``http.server`` shaped like the reference's centerpoint test container
(tests/functional/reference_model.py); the requests are the ones the reference's integration
runner sends (tile 512, overlap 128, GTIFF tiles, NMS 0.75, an S3 and a Kinesis output). The
expected features are computed independently of the worker (reference_contract.py next to this
module) from the rules the reference follows: the model's outline and box moved by the tile
origin, the outline geolocated vertex by vertex (elevation 0 without a DEM), the centre the
outline's pixel centroid geolocated, the model's ``featureClasses``, ``modelMetadata`` and
``id`` unchanged, ``sourceMetadata`` for NITF. They are compared the way the reference's
validator compares (world coordinates rounded to 6 decimals, centres within 1e-8 degrees) and
beyond it (``id``, ``imageBBox``, ``bbox``).
"""

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS

from infra.local_stack import SAMPLE_IMAGE, free_port, wait_until_up
from tests.functional.helpers import Stack, write_geotiff
from tests.functional.reference_contract import (
    ReferenceModel,
    check_like_the_reference,
    expected_features,
    origins,
    reference_request,
    run_job,
    to_world,
)

pytestmark = pytest.mark.functional


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
