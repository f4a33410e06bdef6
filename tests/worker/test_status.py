"""Status messages stay bounded whatever the reason they quote."""

import json

import pytest

from tiling.grid import Window
from worker.contract.status import (
    MAX_DESCRIPTION_CHARS,
    MAX_FAILED_TILES_CHARS,
    MAX_LISTED_FAILED_TILES,
    Status,
    StatusEvent,
    failed_tiles_json,
)


def test_long_descriptions_are_cut_with_the_count() -> None:
    event = StatusEvent(status=Status.FAILED, job_id="j", description="x" * 10_000)
    message = event.sns_message()
    assert message.startswith("StatusMonitor update: FAILED j: xxx")
    assert message.endswith(f"... ({10_000 - MAX_DESCRIPTION_CHARS} more characters)")
    assert len(message) < MAX_DESCRIPTION_CHARS + 100


def test_short_descriptions_are_kept() -> None:
    event = StatusEvent(status=Status.SUCCESS, job_id="j", description="done")
    assert event.sns_message() == "StatusMonitor update: SUCCESS j: done"


def test_duration_is_integer_milliseconds() -> None:
    event = StatusEvent(
        status=Status.SUCCESS, job_id="j", description="d", processing_duration_s=12.3456
    )
    assert event.sns_attributes()["processing_duration"] == "12346"


def test_failed_tiles_are_listed_as_offsets_and_sizes_with_the_count() -> None:
    event = StatusEvent(
        status=Status.PARTIAL,
        job_id="j",
        description="d",
        failed_tile_count=3,
        failed_tiles=(Window(col_off=448, row_off=0, width=512, height=512),),
    )
    attributes = event.sns_attributes()
    assert json.loads(attributes["failed_tiles"]) == [[[0, 448], [512, 512]]]
    assert attributes["failed_tile_count"] == "3"


def test_no_failures_is_an_empty_list_and_zero() -> None:
    event = StatusEvent(status=Status.SUCCESS, job_id="j", description="d", failed_tile_count=0)
    assert event.sns_attributes()["failed_tiles"] == "[]"
    assert event.sns_attributes()["failed_tile_count"] == "0"


def test_statuses_without_counts_have_no_failed_tile_attributes() -> None:
    attributes = StatusEvent(status=Status.STARTED, job_id="j", description="d").sns_attributes()
    assert "failed_tiles" not in attributes
    assert "failed_tile_count" not in attributes


@pytest.mark.parametrize("size", [99_999, 512])
def test_failed_tile_list_is_bounded(size: int) -> None:
    windows = tuple(Window(i * size, i * size, size, size) for i in range(1000))
    text = failed_tiles_json(windows)
    listed = json.loads(text)
    assert len(listed) <= MAX_LISTED_FAILED_TILES
    assert len(text) <= MAX_FAILED_TILES_CHARS
    assert listed[0] == [[0, 0], [size, size]]
    assert listed == [[[w.row_off, w.col_off], [size, size]] for w in windows[: len(listed)]]
