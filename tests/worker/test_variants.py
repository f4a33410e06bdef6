"""Variant selection by weight, once per job."""

from collections import Counter

import pytest

from worker.adapters.variants import choose_variant


def test_weights_over_many_jobs() -> None:
    variants = [("a", 3.0), ("b", 1.0), ("c", 0.0), ("d", 4.0)]
    draws = Counter(choose_variant(variants, f"job-{i}") for i in range(10_000))
    assert draws["c"] == 0
    for name, weight in (("a", 3.0), ("b", 1.0), ("d", 4.0)):
        assert draws[name] / 10_000 == pytest.approx(weight / 8.0, abs=0.02)


def test_same_job_same_variant() -> None:
    variants = [("a", 1.0), ("b", 1.0)]
    assert len({choose_variant(variants, "job-7") for _ in range(50)}) == 1


def test_nothing_to_choose() -> None:
    assert choose_variant([], "j") is None
    assert choose_variant([("a", 0.0)], "j") is None
    assert choose_variant([("a", 0.0), ("b", 2.0)], "j") == "b"
