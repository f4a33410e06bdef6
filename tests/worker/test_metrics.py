"""EMF records and JSON log lines."""

import asyncio
import io
import json
import logging

from worker.metrics import (
    JsonFormatter,
    MetricsWriter,
    TileStats,
    emf_record,
    gathering_tile_stats,
    region_values,
    set_log_context,
    tile_stats,
)


def test_emf_record_declares_every_metric_with_its_unit() -> None:
    record = emf_record(
        {"Model": "m", "InputFormat": "NITF"},
        {"Tiles": (10, "Count"), "RegionSeconds": (2.5, "Seconds")},
        {"job_id": "j"},
        now_s=1700000000.25,
    )
    (directive,) = record["_aws"]["CloudWatchMetrics"]
    assert record["_aws"]["Timestamp"] == 1700000000250
    assert directive["Namespace"] == "ModelRunner"
    assert directive["Dimensions"] == [["InputFormat", "Model"]]
    assert directive["Metrics"] == [
        {"Name": "Tiles", "Unit": "Count"},
        {"Name": "RegionSeconds", "Unit": "Seconds"},
    ]
    assert (record["Tiles"], record["RegionSeconds"], record["Model"]) == (10, 2.5, "m")
    assert record["job_id"] == "j"


def test_region_values() -> None:
    stats = TileStats(latencies_s=[0.1, 0.2, 0.3, 0.4, 1.0], failures=1, retries=3, throttles=2)
    values = region_values(stats, tiles=5, seconds=2.0)
    assert values["TilesPerSecond"] == (2.5, "Count/Second")
    assert values["TileLatencyP50"] == (300.0, "Milliseconds")
    assert values["TileLatencyMax"] == (1000.0, "Milliseconds")
    assert values["EndpointRetries"] == (3, "Count")
    assert values["EndpointThrottles"] == (2, "Count")
    assert values["TileFailures"] == (1, "Count")
    assert "TileLatencyP50" not in region_values(TileStats(), tiles=0, seconds=0.0)


def test_writer_emits_one_json_line() -> None:
    stream = io.StringIO()
    MetricsWriter(stream).write({"Queue": "image"}, {"QueueWaitSeconds": (1.5, "Seconds")})
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["QueueWaitSeconds"] == 1.5


def test_stats_and_log_context_follow_tasks() -> None:
    async def region(name: str) -> tuple[int, str]:
        set_log_context(region_id=name)
        with gathering_tile_stats() as stats:

            async def call() -> None:
                current = tile_stats()
                assert current is not None
                current.retries += 1

            await asyncio.gather(call(), call())
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello %s", ("x",), None)
        return stats.retries, json.loads(JsonFormatter().format(record))["region_id"]

    async def both() -> list[tuple[int, str]]:
        return list(await asyncio.gather(region("1"), region("2")))

    assert asyncio.run(both()) == [(2, "1"), (2, "2")]
    assert tile_stats() is None
