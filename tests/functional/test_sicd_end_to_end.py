"""A SICD NITF through the whole path: features geolocated with the SICD sensor model."""

import json
from pathlib import Path

import numpy as np
import pytest
import shapely

from tests.functional.helpers import Stack
from tests.tiling.sicd_images import write_sicd
from tiling.image import describe_image
from tiling.sicd import SicdSensorModel

pytestmark = pytest.mark.functional


def sicd_model(path: Path) -> SicdSensorModel:
    model = describe_image(str(path)).sensor_model()
    assert isinstance(model, SicdSensorModel)
    return model


def test_sicd_image_is_geolocated_with_its_sensor_model(stack: Stack, tmp_path: Path) -> None:
    path = write_sicd(tmp_path / "sicd.nitf")  # 300 x 200 complex float32 pixels
    request = stack.request(
        stack.upload(path), imageProcessorTileSize=128, imageProcessorTileOverlap=0
    )
    stack.submit(json.dumps(request))
    final = stack.statuses.wait_terminal(request["jobId"])[-1]
    assert final.attributes["status"] == "SUCCESS"
    features = stack.result(request["jobId"])["features"]
    assert len(features) == 3 * 2
    model = sicd_model(path)
    for feature in features:
        ring = np.array(feature["properties"]["imageGeometry"]["coordinates"][0], dtype=float)
        lons, lats = model.image_to_world(ring[:, 0], ring[:, 1])
        world = np.array(feature["geometry"]["coordinates"][0], dtype=float)
        assert np.abs(world[:, 0] - lons).max() < 1e-7
        assert np.abs(world[:, 1] - lats).max() < 1e-7
        np.testing.assert_allclose(world[:, 2], model.scp_hae)


def test_sicd_region_of_interest(stack: Stack, tmp_path: Path) -> None:
    path = write_sicd(tmp_path / "sicd.nitf")
    lons, lats = sicd_model(path).image_to_world(
        np.array([10.0, 120.0, 120.0, 10.0]), np.array([10.0, 10.0, 120.0, 120.0])
    )
    roi = shapely.Polygon(zip(lons, lats, strict=True)).wkt
    request = stack.request(
        stack.upload(path),
        imageProcessorTileSize=64,
        imageProcessorTileOverlap=0,
        regionOfInterest=roi,
    )
    stack.submit(json.dumps(request))
    assert stack.statuses.wait_terminal(request["jobId"])[-1].attributes["status"] == "SUCCESS"
    features = stack.result(request["jobId"])["features"]
    assert len(features) == 2 * 2  # the 110 x 110 px region from (10, 10), 64 px tiles
    for feature in features:
        minx, miny, maxx, maxy = feature["properties"]["imageBBox"]
        assert 10 <= minx < maxx <= 138
        assert 10 <= miny < maxy <= 138


def test_sicd_pixels_cannot_be_png_tiles(stack: Stack, tmp_path: Path) -> None:
    path = write_sicd(tmp_path / "sicd.nitf")
    request = stack.request(stack.upload(path), imageProcessorTileFormat="PNG")
    stack.submit(json.dumps(request))
    final = stack.statuses.wait_terminal(request["jobId"])[-1]
    assert final.attributes["status"] == "FAILED"
    assert "float32 pixels cannot be encoded as PNG" in final.message
