"""Output features: geolocation against pyproj, properties, duplicate removal."""

import json
from typing import Any

import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS

from postprocessing.features import (
    Distillation,
    FeatureContext,
    Selection,
    TileLayout,
    feature_chunks,
    suppress_duplicates,
)
from postprocessing.properties import nitf_source_metadata
from postprocessing.table import Detection, DetectionTable
from tiling.sensor import AffineSensorModel

UTM = CRS.from_epsg(32618)
TRANSFORM = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4500000.0)


def box(
    minx: float, miny: float, maxx: float, maxy: float, iri: str = "a", score: float = 1.0
) -> Detection:
    return Detection(shapely.box(minx, miny, maxx, maxy), ({"iri": iri, "score": score},), {"m": 1})


def affine_xy(cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b, c, d, e, f = TRANSFORM[:6]
    return a * cols + b * rows + c, d * cols + e * rows + f


def features(table: DetectionTable, selection: Selection, **context: Any) -> list[dict[str, Any]]:
    ctx = FeatureContext(
        sensor_model=context.pop("sensor_model", None),
        inference_metadata=context.pop("inference_metadata", {"jobId": "j"}),
        **context,
    )
    return [json.loads(f) for chunk in feature_chunks(table, selection, ctx, 2) for f in chunk]


def test_geolocation_matches_pyproj() -> None:
    detections = [box(10, 20, 30, 40), box(1000, 2000, 1010, 2010), box(5, 5, 6, 6)]
    table = DetectionTable.from_detections(detections)
    out = features(
        table,
        Selection(np.arange(3)),
        sensor_model=AffineSensorModel(TRANSFORM, UTM),
        inference_metadata={"jobId": "j", "inferenceDT": "t"},
        extra_properties={"mission": "m"},
    )
    to_wgs84 = Transformer.from_crs(32618, 4326, always_xy=True)
    assert len(out) == 3
    for detection, feature in zip(detections, out, strict=True):
        pixels = shapely.get_coordinates(detection.geometry)
        a, b, c, d, e, f = TRANSFORM[:6]
        xs = a * pixels[:, 0] + b * pixels[:, 1] + c
        ys = d * pixels[:, 0] + e * pixels[:, 1] + f
        lons, lats = to_wgs84.transform(xs, ys)
        got = np.asarray(feature["geometry"]["coordinates"][0])
        np.testing.assert_allclose(got[:, 0], lons, atol=1e-7)
        np.testing.assert_allclose(got[:, 1], lats, atol=1e-7)
        assert got.shape[1] == 3
        assert not got[:, 2].any()  # an orthoimage without a DEM: elevation 0
        assert feature["bbox"] == pytest.approx([min(lons), min(lats), max(lons), max(lats)])
        props = feature["properties"]
        assert props["imageBBox"] == list(detection.geometry.bounds)
        assert shapely.geometry.shape(props["imageGeometry"]).equals(detection.geometry)
        assert props["featureClasses"] == [{"iri": "a", "score": 1.0}]
        assert props["inferenceMetadata"] == {"jobId": "j", "inferenceDT": "t"}
        assert (props["mission"], props["m"]) == ("m", 1)
        assert min(lons) < props["center_longitude"] < max(lons)
        assert min(lats) < props["center_latitude"] < max(lats)
        assert "sourceMetadata" not in props


def test_request_properties_win_over_model_properties() -> None:
    table = DetectionTable.from_detections([box(1, 2, 3, 4)])
    (feature,) = features(table, Selection(np.arange(1)), extra_properties={"m": 0, "x": 2})
    assert feature["properties"]["m"] == 0
    assert feature["properties"]["x"] == 2


def test_request_properties_may_replace_the_workers_own() -> None:
    # As in the reference: featureProperties are set last, inferenceMetadata included; a
    # NITF's sourceMetadata comes after them.
    table = DetectionTable.from_detections([box(1, 2, 3, 4)])
    (feature,) = features(
        table,
        Selection(np.arange(1)),
        extra_properties={"inferenceMetadata": {"jobId": "mine"}, "sourceMetadata": "x"},
        source_metadata={"format": "NITF"},
    )
    props = feature["properties"]
    assert props["inferenceMetadata"] == {"jobId": "mine"}
    assert props["sourceMetadata"] == [{"format": "NITF"}]
    assert props["m"] == 1


def test_model_box_and_id_are_kept() -> None:
    # A point detection with its box, and an outline whose box is not its bounds.
    point = Detection(
        shapely.Point(10, 20), ({"iri": "a", "score": 0.5},), {}, (0, 5, 20, 35), "model-7"
    )
    outline = Detection(shapely.box(100, 100, 110, 120), (), {}, (95, 98, 112, 121), 42)
    table = DetectionTable.from_detections([point, outline])
    sensor = AffineSensorModel(TRANSFORM, UTM)
    first, second = features(table, Selection(np.arange(2)), sensor_model=sensor)
    assert (first["id"], second["id"]) == ("model-7", 42)
    assert first["properties"]["imageBBox"] == [0, 5, 20, 35]
    assert second["properties"]["imageBBox"] == [95, 98, 112, 121]
    to_wgs84 = Transformer.from_crs(32618, 4326, always_xy=True)
    for feature, (minx, miny, maxx, maxy) in (
        (first, (0, 5, 20, 35)),
        (second, (95, 98, 112, 121)),
    ):
        xs, ys = affine_xy(np.array([minx, maxx]), np.array([maxy, miny]))
        lons, lats = to_wgs84.transform(xs, ys)
        assert feature["bbox"] == pytest.approx([lons[0], lats[0], lons[1], lats[1]], abs=1e-9)
    assert first["geometry"]["type"] == "Point"
    lon, lat = to_wgs84.transform(*(TRANSFORM @ (10, 20)))
    assert (first["properties"]["center_longitude"], first["properties"]["center_latitude"]) == (
        pytest.approx(lon, abs=1e-12),
        pytest.approx(lat, abs=1e-12),
    )


def test_features_without_an_id_get_a_stable_one() -> None:
    detections = [box(1, 2, 3, 4), box(5, 6, 7, 8), box(1, 2, 3, 4, "b")]
    table = DetectionTable.from_detections(detections)
    once = features(table, Selection(np.arange(3)), image_id="job:s3://b/i.tif")
    again = features(
        table.take(np.array([2, 0, 1])), Selection(np.arange(3)), image_id="job:s3://b/i.tif"
    )
    other_job = features(table, Selection(np.arange(3)), image_id="job2:s3://b/i.tif")
    ids = [f["id"] for f in once]
    assert len(set(ids)) == 3
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert [f["id"] for f in again] == [ids[2], ids[0], ids[1]]  # a property of the detection
    assert not set(ids) & {f["id"] for f in other_job}


def test_inference_time_is_the_tiles_in_whole_seconds() -> None:
    table = DetectionTable.from_detections([box(1, 2, 3, 4), box(5, 6, 7, 8)])
    stamped = DetectionTable.concat(
        [table.take(np.array([0])).answered_at(1_700_000_000.75), table.take(np.array([1]))]
    )
    first, second = features(
        stamped,
        Selection(np.arange(2)),
        inference_metadata={"jobId": "j", "inferenceDT": "2026-01-01T00:00:00Z"},
    )
    assert first["properties"]["inferenceMetadata"] == {
        "jobId": "j",
        "inferenceDT": "2023-11-14T22:13:20Z",
    }
    # A row without a tile time (staged by an older worker) gets the image's.
    assert second["properties"]["inferenceMetadata"]["inferenceDT"] == "2026-01-01T00:00:00Z"


def test_without_sensor_model_geometry_stays_in_pixels() -> None:
    table = DetectionTable.from_detections([box(1, 2, 3, 4)])
    (feature,) = features(table, Selection(np.arange(1)), source_metadata={"format": "NITF"})
    assert feature["bbox"] == [1, 2, 3, 4]
    assert feature["properties"]["sourceMetadata"] == [{"format": "NITF"}]


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
    table = DetectionTable.from_detections(
        [box(0, 0, 10, 10, "a", 0.9), box(1, 0, 11, 10, "a", 0.95), box(0, 0, 10, 10, "b")]
    )
    selection = suppress_duplicates(table, Distillation("NMS", iou_threshold=0.5))
    assert selection.rows.tolist() == [1, 2]
    assert suppress_duplicates(table, None).rows.tolist() == [0, 1, 2]


def test_only_band_detections_are_compared() -> None:
    # Two tiles 0..512 and 384..896 on x: duplicates inside one tile's own area stay.
    layout = TileLayout(np.array([0, 384]), np.array([0]), 512, 512)
    table = DetectionTable.from_detections(
        [
            box(100, 100, 120, 120, score=0.9),
            box(101, 100, 121, 120, score=0.8),  # same tile, outside the band: kept
            box(400, 100, 420, 120, score=0.9),
            box(401, 100, 421, 120, score=0.8),  # in the band: a duplicate
        ]
    )
    selection = suppress_duplicates(table, Distillation("NMS", iou_threshold=0.5), layout)
    assert selection.rows.tolist() == [0, 1, 2]


def test_soft_nms_writes_score_and_raw_score() -> None:
    table = DetectionTable.from_detections(
        [box(0, 0, 10, 10, "a", 0.9), box(1, 0, 11, 10, "a", 0.8)]
    )
    selection = suppress_duplicates(
        table, Distillation("SOFT_NMS", sigma=0.5, skip_box_threshold=0.01)
    )
    first, second = features(table, selection)
    assert first["properties"]["featureClasses"] == [{"iri": "a", "score": 0.9}]
    classes = second["properties"]["featureClasses"][0]
    assert classes["rawScore"] == 0.8
    assert classes["score"] < 0.8
