"""Staged regions survive the round trip through bytes exactly; bad bytes are refused."""

import numpy as np
import pytest
import shapely

from postprocessing.table import Detection, DetectionTable
from tiling.grid import Window
from worker.staging import (
    FailedTile,
    StagedRegion,
    StagingCorruptError,
    decode_region,
    encode_region,
)


def table() -> DetectionTable:
    return DetectionTable.from_detections(
        [
            Detection(
                shapely.box(1, 2, 30, 40),
                ({"iri": "vehicle", "score": 0.9},),
                {"modelMetadata": {"name": "ü-model"}},
            ),
            Detection(shapely.Point(5, 5).buffer(3)),
            Detection(shapely.box(0, 0, 1, 1), ({"iri": "", "score": 0.1},)),
        ]
    )


def test_round_trip_is_exact() -> None:
    original = StagedRegion(
        table(), 9, (FailedTile(Window(10, 20, 256, 128), "HTTP 500: boom"),), lost_tiles=2
    )
    back = decode_region(encode_region(original).getvalue())
    assert back.tile_count == 9
    assert back.failed_tiles == original.failed_tiles
    assert back.failed_count == 3
    for name in ("labels", "geometries_wkb", "classes_json", "properties_json"):
        assert getattr(back.table, name) == getattr(original.table, name)
    np.testing.assert_array_equal(back.table.boxes, original.table.boxes)
    np.testing.assert_array_equal(back.table.scores, original.table.scores)


def test_empty_region() -> None:
    back = decode_region(encode_region(StagedRegion(DetectionTable(), 4)).getvalue())
    assert len(back.table) == 0
    assert back.table.boxes.shape == (0, 4)
    assert back.failed_count == 0


@pytest.mark.parametrize(
    "data", [b"", b"not a zip", encode_region(StagedRegion(table(), 1)).getvalue()[:100]]
)
def test_corrupt_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(StagingCorruptError, match="staged region unreadable"):
        decode_region(data)
