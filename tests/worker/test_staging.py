"""Staged regions survive the round trip through bytes exactly; bad bytes are refused."""

import json

import numpy as np
import pytest
import shapely

from postprocessing.table import Detection, DetectionTable, table_arrays, table_from_arrays
from tiling.grid import Window
from worker.contract.records import FailedTile
from worker.staging import StagedRegion, StagingCorruptError, decode_region, encode_region


def table() -> DetectionTable:
    return DetectionTable.from_detections(
        [
            Detection(
                shapely.box(1, 2, 30, 40),
                ({"iri": "vehicle", "score": 0.9},),
                {"modelMetadata": {"name": "ü-model"}},
                image_bbox=(0, 1, 31, 41),
                feature_id="ü-1",
            ),
            Detection(shapely.Point(5, 5).buffer(3)),
            Detection(shapely.box(0, 0, 1, 1), ({"iri": "", "score": 0.1},)),
        ]
    )


def test_round_trip_is_exact() -> None:
    stamped = table().answered_at(1_765_000_000.5)
    original = StagedRegion(
        stamped, 9, (FailedTile(Window(10, 20, 256, 128), "HTTP 500: boom"),), lost_tiles=2
    )
    back = decode_region(encode_region(original).getvalue())
    assert back.tile_count == 9
    assert back.failed_tiles == original.failed_tiles
    assert back.failed_count == 3
    for name in ("labels", "geometries_wkb", "classes_json", "properties_json", "ids_json"):
        assert getattr(back.table, name) == getattr(original.table, name)
    assert [json.loads(i) if i else None for i in back.table.ids_json] == ["ü-1", None, None]
    np.testing.assert_array_equal(back.table.boxes, original.table.boxes)
    np.testing.assert_array_equal(back.table.scores, original.table.scores)
    np.testing.assert_array_equal(back.table.model_bboxes(), original.table.model_bboxes())
    assert np.isnan(back.table.model_bboxes()[1:]).all()
    np.testing.assert_array_equal(back.table.times(), [1_765_000_000.5] * 3)


def test_regions_staged_without_the_model_boxes_ids_and_times_still_read() -> None:
    arrays = {
        k: v
        for k, v in table_arrays(table()).items()
        if not k.startswith(("ids_json", "image_bboxes", "inference_times"))
    }
    back = table_from_arrays(arrays)
    assert len(back) == 3
    assert back.model_ids() == ["", "", ""]
    assert np.isnan(back.model_bboxes()).all()
    assert np.isnan(back.times()).all()


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
