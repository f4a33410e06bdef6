"""The synthetic models as pure functions of a tile."""

import json

import numpy as np
import pytest

from models.http import parse_custom_attributes
from models.synthetic import centerpoint, failure, flood
from postprocessing.detections import parse_model_output


def tile(value: int, rows: int = 400, cols: int = 200) -> np.ndarray:
    return np.full((1, rows, cols), value, dtype=np.uint8)


def test_centerpoint_box_at_centre() -> None:
    status, body = centerpoint(tile(200), {})
    assert status == 200
    table = parse_model_output(body)
    assert table.boxes.tolist() == [pytest.approx([80, 160, 120, 240])]
    assert json.loads(table.classes_json[0]) == [{"iri": "sample_object", "score": 1.0}]


def test_flood_volume() -> None:
    status, body = flood(tile(200), {"flood_volume": "37"})
    assert status == 200
    table = parse_model_output(body)
    assert len(table) == 37
    for minx, miny, maxx, maxy in table.boxes.tolist():
        assert 0 <= minx < maxx <= 200
        assert 0 <= miny < maxy <= 400
    assert flood(tile(1), {"flood_volume": "many"})[0] == 400


@pytest.mark.parametrize(
    ("value", "status", "parses"),
    [(10, 500, False), (40, 400, False), (80, 200, False), (100, 200, False), (200, 200, True)],
)
def test_failure_by_mean(value: int, status: int, parses: bool) -> None:
    got_status, body = failure(tile(value), {})
    assert got_status == status
    if parses:
        assert len(parse_model_output(body)) == 1
    elif status == 200:
        with pytest.raises(ValueError, match=r"JSON|FeatureCollection"):
            parse_model_output(body)
    else:
        assert "message" in json.loads(body)


def test_custom_attributes() -> None:
    assert parse_custom_attributes("model_selection=flood, flood_volume=5;x=1") == {
        "model_selection": "flood",
        "flood_volume": "5",
        "x": "1",
    }
    assert parse_custom_attributes(None) == {}
