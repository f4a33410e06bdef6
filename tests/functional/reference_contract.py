"""The reference's integration requests and the features it writes, computed independently.

The requests are the ones the reference's integration runner sends (tile 512, overlap 128,
GTIFF tiles, NMS 0.75, an S3 and a Kinesis output). The expected features follow the rules the
reference follows: the model's outline and box moved by the tile origin, the outline geolocated
vertex by vertex (elevation 0 without a DEM), the centre the outline's pixel centroid
geolocated, the model's ``featureClasses``, ``modelMetadata`` and ``id`` unchanged. They are
compared the way the reference's validator compares (world coordinates rounded to 6 decimals,
centres within 1e-8 degrees) and beyond it (``id``, ``imageBBox``, ``bbox``).
"""

import json
import math
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS

from tests.functional.helpers import Stack
from tests.functional.reference_model import centre_box, hexagon

TILE, OVERLAP = 512, 128
INFERENCE_DT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@dataclass
class ReferenceModel:
    url: str
    ids_file: Path

    def ids(self) -> set[str]:
        return set(self.ids_file.read_text().split()) if self.ids_file.exists() else set()


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
