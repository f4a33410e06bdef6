"""Output features: geolocation against pyproj, properties, duplicate removal."""

import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS

from postprocessing.detections import Detection
from postprocessing.features import (
    Distillation,
    build_features,
    nitf_source_metadata,
    suppress_duplicates,
)
from tiling.sensor import AffineSensorModel

UTM = CRS.from_epsg(32618)
TRANSFORM = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4500000.0)


def box(
    minx: float, miny: float, maxx: float, maxy: float, iri: str = "a", score: float = 1.0
) -> Detection:
    return Detection(shapely.box(minx, miny, maxx, maxy), ({"iri": iri, "score": score},), {"m": 1})


def test_geolocation_matches_pyproj() -> None:
    detections = [box(10, 20, 30, 40), box(1000, 2000, 1010, 2010)]
    features = build_features(
        detections,
        AffineSensorModel(TRANSFORM, UTM),
        inference_metadata={"jobId": "j", "inferenceDT": "t"},
        extra_properties={"mission": "m"},
    )
    to_wgs84 = Transformer.from_crs(32618, 4326, always_xy=True)
    for detection, feature in zip(detections, features, strict=True):
        pixels = shapely.get_coordinates(detection.geometry)
        a, b, c, d, e, f = TRANSFORM[:6]
        xs = a * pixels[:, 0] + b * pixels[:, 1] + c
        ys = d * pixels[:, 0] + e * pixels[:, 1] + f
        lons, lats = to_wgs84.transform(xs, ys)
        got = np.asarray(feature["geometry"]["coordinates"][0])
        np.testing.assert_allclose(got[:, 0], lons, atol=1e-7)
        np.testing.assert_allclose(got[:, 1], lats, atol=1e-7)
        assert feature["bbox"] == pytest.approx([min(lons), min(lats), max(lons), max(lats)])
        props = feature["properties"]
        assert props["imageBBox"] == list(detection.geometry.bounds)
        assert props["featureClasses"] == [{"iri": "a", "score": 1.0}]
        assert props["inferenceMetadata"] == {"jobId": "j", "inferenceDT": "t"}
        assert (props["mission"], props["m"]) == ("m", 1)
        assert min(lons) < props["center_longitude"] < max(lons)
        assert min(lats) < props["center_latitude"] < max(lats)
        assert "sourceMetadata" not in props


def test_without_sensor_model_geometry_stays_in_pixels() -> None:
    (feature,) = build_features([box(1, 2, 3, 4)], None, inference_metadata={})
    assert feature["bbox"] == [1, 2, 3, 4]


def test_nitf_source_metadata() -> None:
    tags = {"NITF_IDATIM": "19961217102630", "NITF_ICAT": "VIS", "NITF_FTITLE": "Airfield"}
    assert nitf_source_metadata(tags, "s3://b/i.ntf") == {
        "format": "NITF",
        "category": "VIS",
        "sourceId": "Airfield",
        "sourceDT": "1996-12-17T10:26:30Z",
        "location": "s3://b/i.ntf",
    }
    assert nitf_source_metadata({}, "x") is None


def test_nms_removes_overlap_duplicates_per_class() -> None:
    detections = [box(0, 0, 10, 10, "a", 0.9), box(1, 0, 11, 10, "a", 0.95), box(0, 0, 10, 10, "b")]
    kept = suppress_duplicates(detections, Distillation("NMS", iou_threshold=0.5))
    assert kept == [detections[1], detections[2]]


def test_soft_nms_writes_score_and_raw_score() -> None:
    detections = [box(0, 0, 10, 10, "a", 0.9), box(1, 0, 11, 10, "a", 0.8)]
    kept = suppress_duplicates(
        detections, Distillation("SOFT_NMS", sigma=0.5, skip_box_threshold=0.01)
    )
    assert kept[0].feature_classes[0]["score"] == 0.9
    second = kept[1].feature_classes[0]
    assert second["rawScore"] == 0.8
    assert second["score"] < 0.8
