"""Endpoint capacity, image load and admission: the arithmetic of capacity-based throttling."""

from typing import Any

import pytest

from worker.capacity import INSTANCE_CONCURRENCY_TAG, admits, image_load, sagemaker_capacity


def instances(name: str, count: int) -> dict[str, Any]:
    return {"VariantName": name, "CurrentInstanceCount": count, "CurrentWeight": 1.0}


def serverless(name: str, concurrency: int) -> dict[str, Any]:
    return {
        "VariantName": name,
        "CurrentServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": concurrency},
    }


@pytest.mark.parametrize(
    ("variants", "tags", "variant", "expected"),
    [
        ([instances("a", 3)], {}, None, 6),  # 3 instances x the default 2
        ([instances("a", 3)], {INSTANCE_CONCURRENCY_TAG: "8"}, None, 24),
        ([instances("a", 3)], {INSTANCE_CONCURRENCY_TAG: "zero"}, None, 6),  # bad tag ignored
        ([instances("a", 3)], {INSTANCE_CONCURRENCY_TAG: "0"}, None, 6),
        ([serverless("s", 20)], {INSTANCE_CONCURRENCY_TAG: "8"}, None, 20),  # tag is per instance
        ([instances("a", 2), serverless("s", 5)], {}, None, 9),
        ([instances("a", 2), serverless("s", 5)], {}, "s", 5),  # TargetVariant: that one only
        ([instances("a", 2), instances("b", 4)], {INSTANCE_CONCURRENCY_TAG: "3"}, "b", 12),
        ([instances("a", 0)], {}, None, 0),  # scaled to zero
        ([], {}, None, 0),
    ],
)
def test_sagemaker_capacity(
    variants: list[dict[str, Any]], tags: dict[str, str], variant: str | None, expected: int
) -> None:
    description = {"EndpointName": "e", "ProductionVariants": variants}
    assert sagemaker_capacity(description, tags, 2, variant) == expected


@pytest.mark.parametrize(
    ("tiles", "regions", "concurrency", "expected"),
    [(100, 1, 16, 16), (100, 4, 16, 64), (10, 4, 16, 10), (1, 1, 16, 1), (0, 0, 16, 1)],
)
def test_image_load_is_what_the_fleet_can_send(
    tiles: int, regions: int, concurrency: int, expected: int
) -> None:
    assert image_load(tiles, regions, concurrency) == expected


@pytest.mark.parametrize(
    ("capacity", "percent", "active", "added", "expected"),
    [
        (10, 100.0, 0, 50, True),  # alone on the endpoint: runs even when larger than it
        (0, 100.0, 0, 16, True),
        (32, 100.0, 16, 16, True),
        (32, 100.0, 17, 16, False),
        (32, 50.0, 8, 8, True),
        (32, 50.0, 9, 8, False),
        (32, 150.0, 32, 16, True),  # over-subscription allowed on purpose
    ],
)
def test_admission(capacity: int, percent: float, active: int, added: int, expected: bool) -> None:
    assert admits(capacity, percent, active, added) is expected
