"""Parsing model replies (current and legacy names) and shifting to image pixels."""

import json
from typing import Any

import pytest
import shapely

from postprocessing.detections import parse_model_output, shift_detections
from postprocessing.errors import ModelOutputError


def reply(*properties: dict[str, Any]) -> bytes:
    features = [{"type": "Feature", "geometry": None, "properties": p} for p in properties]
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def test_current_names() -> None:
    geometry = {"type": "Polygon", "coordinates": [[[1, 2], [5, 2], [5, 6], [1, 6], [1, 2]]]}
    (detection,) = parse_model_output(
        reply(
            {
                "imageGeometry": geometry,
                "featureClasses": [{"iri": "a", "score": 0.4}, {"iri": "b", "score": 0.9}],
                "modelMetadata": {"v": 1},
                "imageBBox": [0, 0, 1, 1],
            }
        )
    )
    assert detection.geometry.bounds == (1, 2, 5, 6)
    assert (detection.label, detection.score) == ("b", 0.9)
    assert detection.properties == {"modelMetadata": {"v": 1}}


@pytest.mark.parametrize(
    "properties",
    [
        {"bounds_imcoords": [1, 2, 5, 6]},
        {"imageBBox": [1, 2, 5, 6]},
        {"geom_imcoords": [[1, 2], [5, 2], [5, 6], [1, 6]]},
        {"detection": {"pixelCoordinates": [[1, 2], [5, 2], [5, 6], [1, 6]]}},
    ],
)
def test_legacy_names(properties: dict[str, Any]) -> None:
    (detection,) = parse_model_output(reply({**properties, "feature_types": {"ship": 0.7}}))
    assert detection.geometry.bounds == (1, 2, 5, 6)
    assert detection.feature_classes == ({"iri": "ship", "score": 0.7},)


def test_feature_without_classes_is_kept() -> None:
    (detection,) = parse_model_output(reply({"imageBBox": [0, 0, 2, 2]}))
    assert (detection.label, detection.score) == ("", 1.0)


def test_empty_collection() -> None:
    assert parse_model_output(b'{"type": "FeatureCollection", "features": []}') == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b'{"type": "Feature"}', "not a GeoJSON FeatureCollection"),
        (reply({"score": 1}), "no pixel geometry"),
        (reply({"imageBBox": [1, 2]}), "invalid pixel geometry"),
        (reply({"imageBBox": [0, 0, 1, 1], "featureClasses": "x"}), "featureClasses"),
    ],
)
def test_bad_replies(body: bytes, message: str) -> None:
    with pytest.raises(ModelOutputError, match=message):
        parse_model_output(body)


def test_shift_to_image_pixels() -> None:
    detections = parse_model_output(reply({"imageBBox": [1, 2, 5, 6]}, {"imageBBox": [0, 0, 1, 1]}))
    moved = shift_detections(detections, 100, 200)
    assert [d.geometry.bounds for d in moved] == [(101, 202, 105, 206), (100, 200, 101, 201)]
    assert shapely.equals(detections[0].geometry, shapely.box(1, 2, 5, 6))
