"""Parsing model replies (current and legacy names) into tables in image pixels."""

import json
from typing import Any

import pytest
import shapely

from postprocessing.detections import parse_model_output
from postprocessing.errors import ModelOutputError
from postprocessing.table import DetectionTable


def reply(*properties: dict[str, Any]) -> bytes:
    features = [{"type": "Feature", "geometry": None, "properties": p} for p in properties]
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def geometries(table: DetectionTable) -> list[Any]:
    return list(shapely.from_wkb(table.geometries_wkb))


def test_current_names() -> None:
    geometry = {"type": "Polygon", "coordinates": [[[1, 2], [5, 2], [5, 6], [1, 6], [1, 2]]]}
    table = parse_model_output(
        reply(
            {
                "imageGeometry": geometry,
                "featureClasses": [{"iri": "a", "score": 0.4}, {"iri": "b", "score": 0.9}],
                "modelMetadata": {"v": 1},
                "imageBBox": [0, 0, 1, 1],
            }
        )
    )
    assert len(table) == 1
    assert table.boxes.tolist() == [[1, 2, 5, 6]]
    assert (table.labels, table.scores.tolist()) == (["b"], [0.9])
    assert json.loads("{" + table.properties_json[0] + "}") == {"modelMetadata": {"v": 1}}
    assert json.loads(table.classes_json[0])[1] == {"iri": "b", "score": 0.9}


@pytest.mark.parametrize(
    "properties",
    [
        {"bounds_imcoords": [1, 2, 5, 6]},
        {"imageBBox": [1, 2, 5, 6]},
        {"geom_imcoords": [[1, 2], [5, 2], [5, 6], [1, 6]]},
        {"detection": {"pixelCoordinates": [[1, 2], [5, 2], [5, 6], [1, 6]]}},
        {"imageGeometry": {"type": "Point", "coordinates": [3, 4]}},
        {
            "imageGeometry": {
                "type": "Polygon",
                "coordinates": [
                    [[1, 2], [5, 2], [5, 6], [1, 6], [1, 2]],
                    [[2, 3], [3, 3], [3, 4], [2, 3]],
                ],
            }
        },
    ],
)
def test_other_geometries_and_legacy_names(properties: dict[str, Any]) -> None:
    table = parse_model_output(reply({**properties, "feature_types": {"ship": 0.7}}), 10, 20)
    (geometry,) = geometries(table)
    minx, miny, _, _ = geometry.bounds
    assert (minx, miny) == ((11, 22) if geometry.geom_type != "Point" else (13, 24))
    assert table.labels == ["ship"]
    assert json.loads(table.classes_json[0]) == [{"iri": "ship", "score": 0.7}]
    # The converted legacy names are removed; ``detection`` is the model's and stays as sent.
    kept = {k: v for k, v in properties.items() if k == "detection"}
    assert json.loads("{" + table.properties_json[0] + "}") == kept


def test_feature_without_classes_is_kept() -> None:
    table = parse_model_output(reply({"imageBBox": [0, 0, 2, 2]}))
    assert (table.labels, table.scores.tolist(), table.classes_json) == ([""], [1.0], ["[]"])


def test_empty_collection() -> None:
    assert len(parse_model_output(b'{"type": "FeatureCollection", "features": []}')) == 0
    assert len(parse_model_output(b'{"type": "FeatureCollection"}')) == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b'{"type": "Feature"}', "not a GeoJSON FeatureCollection"),
        (reply({"score": 1}), "no pixel geometry"),
        (reply({"imageBBox": [1, 2]}), "imageBBox must be 4 numbers"),
        (reply({"imageBBox": [0, 0, 1, 1], "featureClasses": "x"}), "featureClasses"),
        (reply({"imageBBox": [0, 0, 1, 1], "featureClasses": [{"score": "x"}]}), "not a number"),
        (reply({"imageGeometry": {"type": "Polygon", "coordinates": []}}), "empty pixel geometry"),
        (
            reply({"imageGeometry": {"type": "MultiPolygon", "coordinates": [[], [0]]}}),
            "invalid pixel geometry",
        ),
    ],
)
def test_bad_replies(body: bytes, message: str) -> None:
    with pytest.raises(ModelOutputError, match=message):
        parse_model_output(body)


def test_shift_to_image_pixels() -> None:
    ring = [[1, 2], [5, 2], [5, 6], [1, 6], [1, 2]]
    body = reply(
        {"imageGeometry": {"type": "Polygon", "coordinates": [ring]}},
        {"imageBBox": [0, 0, 1, 1]},
    )
    table = parse_model_output(body, 100, 200)
    assert table.boxes.tolist() == [[101, 202, 105, 206], [100, 200, 101, 201]]
    assert shapely.equals(geometries(table)[0], shapely.box(101, 202, 105, 206))


def test_self_intersecting_polygon_is_kept_as_given() -> None:
    bow_tie = [[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]
    table = parse_model_output(
        reply({"imageGeometry": {"type": "Polygon", "coordinates": [bow_tie]}})
    )
    (geometry,) = geometries(table)
    assert not geometry.is_valid
    assert table.boxes.tolist() == [[0, 0, 10, 10]]
    assert shapely.get_coordinates(geometry).tolist() == bow_tie


def box(minx: float, miny: float, maxx: float, maxy: float) -> dict[str, Any]:
    return {"imageBBox": [minx, miny, maxx, maxy], "featureClasses": [{"iri": "a", "score": 0.5}]}


def test_implausible_features_are_dropped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    body = reply(
        box(10, 10, 20, 20),  # inside
        box(-500, 900, -400, 1000),  # outside, but within one tile: kept (models pad)
        box(5000, 10, 5010, 20),  # far outside a 512 px tile
        box(10, -1e300, 20, 1e300),  # spans absurdly
    )
    table = parse_model_output(body, 1000, 2000, tile_size=(512, 512))
    assert table.boxes.tolist() == [[1010, 2010, 1020, 2020], [500, 2900, 600, 3000]]
    assert "2 of 4 features dropped" in caplog.text


def test_too_many_features_fail_the_tile() -> None:
    body = reply(*[box(i, i, i + 1, i + 1) for i in range(11)])
    assert len(parse_model_output(body, max_features=11)) == 11
    with pytest.raises(ModelOutputError, match="11 features, more than 10 for one tile"):
        parse_model_output(body, max_features=10)


def test_infinite_numbers_fail_the_tile_as_invalid_json() -> None:
    with pytest.raises(ModelOutputError, match="not JSON: number is infinity"):
        parse_model_output(reply(box(10, 10, 20, 20)).replace(b"20]", b"1e999]"))


def test_model_box_and_id_are_kept_and_shifted() -> None:
    features = [
        {
            "type": "Feature",
            "id": "a1",
            "geometry": None,
            "properties": {
                "imageGeometry": {"type": "Point", "coordinates": [0.0, 0.0]},
                "imageBBox": [1, 2, 5, 6],
            },
        },
        {
            "type": "Feature",
            "id": 7,
            "geometry": None,
            "properties": {
                "geom_imcoords": [[1, 2], [5, 2], [5, 6], [1, 6]],
                "bounds_imcoords": [0, 1, 6, 7],
            },
        },
        {"type": "Feature", "geometry": None, "properties": {"imageBBox": [3, 3, 4, 4]}},
    ]
    body = json.dumps({"type": "FeatureCollection", "features": features}).encode()
    table = parse_model_output(body, 100, 200)
    assert table.model_bboxes().tolist() == [
        [101, 202, 105, 206],
        [100, 201, 106, 207],
        [103, 203, 104, 204],
    ]
    assert table.boxes.tolist() == [
        [100, 200, 100, 200],
        [101, 202, 105, 206],
        [103, 203, 104, 204],
    ]
    assert table.model_ids() == ['"a1"', "7", ""]


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ({"id": {"x": 1}, "properties": {"imageBBox": [0, 0, 1, 1]}}, "feature 0: id must be"),
        ({"id": True, "properties": {"imageBBox": [0, 0, 1, 1]}}, "feature 0: id must be"),
        ({"properties": {"imageBBox": [0, 0, 1]}}, "feature 0: imageBBox must be 4 numbers"),
        ({"properties": {"imageBBox": "0,0,1,1"}}, "feature 0: imageBBox must be 4 numbers"),
        (
            {
                "properties": {
                    "imageGeometry": {"type": "Point", "coordinates": [1, 1]},
                    "imageBBox": [0, "a", 1, 1],
                }
            },
            "feature 0: imageBBox must be 4 numbers",
        ),
    ],
)
def test_bad_box_or_id_fails_the_tile_with_the_reason(
    feature: dict[str, Any], message: str
) -> None:
    body = json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", **feature}]})
    with pytest.raises(ModelOutputError, match=message):
        parse_model_output(body.encode())


def test_model_properties_not_owned_by_the_worker_pass_unchanged() -> None:
    properties = {
        "imageBBox": [0, 0, 1, 1],
        "modelMetadata": {"modelName": "m", "ontologyVersion": "1.0.0"},
        "detection": {"pixelCoordinates": [[0, 0], [1, 0], [1, 1]]},
        "custom": [1, {"nested": None}],
        "image_id": "random",
        "inferenceTime": "2020-01-01T00:00:00Z",
        "detection_score": 0.5,
        "adjusted_feature_types": {"a": 1},
        "center_longitude": 1.0,
    }
    table = parse_model_output(reply(properties))
    assert json.loads("{" + table.properties_json[0] + "}") == {
        k: properties[k] for k in ("modelMetadata", "detection", "custom")
    }
