"""The example CloudWatch dashboard shows the metrics the worker writes."""

import json
import re
from pathlib import Path
from typing import Any

from worker.metrics import (
    NAMESPACE,
    TileStats,
    capacity_wait_values,
    image_values,
    queue_wait_values,
    region_values,
)

DASHBOARD = Path(__file__).parents[1] / "infra" / "cloudwatch-dashboard.json"
GRID_WIDTH = 24


def emitted() -> set[str]:
    region = region_values(TileStats(latencies_s=[0.1, 0.2]), tiles=2, seconds=1.0)
    image = image_values(10, 0, 2.0, 0.5, failed=False)
    return set(region) | set(image) | set(queue_wait_values(1.0)) | set(capacity_wait_values())


def dashboard_metrics(widgets: list[dict[str, Any]]) -> set[str]:
    names: set[str] = set()
    for widget in widgets:
        for metric in widget["properties"].get("metrics", []):
            if isinstance(metric[0], dict):
                names |= set(re.findall(r'MetricName="(\w+)"', metric[0]["expression"]))
                assert f"{{{NAMESPACE}," in metric[0]["expression"]
            elif metric[0] == NAMESPACE:
                names.add(metric[1])
    return names


def test_every_worker_metric_is_shown_and_nothing_else() -> None:
    widgets = json.loads(DASHBOARD.read_text())["widgets"]
    assert dashboard_metrics(widgets) == emitted()


def test_widgets_fit_the_grid_without_overlapping() -> None:
    widgets = json.loads(DASHBOARD.read_text())["widgets"]
    taken: set[tuple[int, int]] = set()
    for widget in widgets:
        assert widget["x"] + widget["width"] <= GRID_WIDTH
        cells = {
            (x, y)
            for x in range(widget["x"], widget["x"] + widget["width"])
            for y in range(widget["y"], widget["y"] + widget["height"])
        }
        assert not cells & taken, widget["properties"].get("title")
        taken |= cells
