"""Kinesis record splitting (pure part of the sinks)."""

import json

import pytest

from worker.errors import SinkError
from worker.sinks import KINESIS_MAX_RECORD_BYTES, kinesis_records


def feature(i: int, pad: int = 0) -> dict[str, object]:
    return {"type": "Feature", "geometry": None, "properties": {"i": i, "pad": "x" * pad}}


def test_batches_of_batch_size() -> None:
    records = list(kinesis_records([feature(i) for i in range(25)], 10))
    counts = [len(json.loads(r)["features"]) for r in records]
    assert counts == [10, 10, 5]
    ids = [f["properties"]["i"] for r in records for f in json.loads(r)["features"]]
    assert ids == list(range(25))


def test_records_stay_under_one_mebibyte() -> None:
    features = [feature(i, pad=300_000) for i in range(8)]
    records = list(kinesis_records(features, 100))
    assert all(len(r) <= KINESIS_MAX_RECORD_BYTES for r in records)
    assert sum(len(json.loads(r)["features"]) for r in records) == 8


def test_oversized_feature_is_reported() -> None:
    with pytest.raises(SinkError, match="exceeds the 1 MiB"):
        list(kinesis_records([feature(0, pad=KINESIS_MAX_RECORD_BYTES)], 10))
