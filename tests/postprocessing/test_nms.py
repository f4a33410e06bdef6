"""NMS and Soft-NMS against brute-force oracles and their laws."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postprocessing.nms import non_max_suppression, soft_non_max_suppression


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def oracle_nms(
    boxes: list[list[float]], scores: list[float], labels: list[int], thr: float
) -> list[int]:
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order:
        if all(labels[i] != labels[k] or iou(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


def oracle_soft(
    boxes: list[list[float]], scores: list[float], labels: list[int], sigma: float, skip: float
) -> dict[int, float]:
    current = {i: s for i, s in enumerate(scores) if s >= skip}
    kept: dict[int, float] = {}
    while current:
        best = max(sorted(current), key=lambda i: current[i])
        kept[best] = current.pop(best)
        for i in list(current):
            if labels[i] == labels[best]:
                current[i] *= math.exp(-(iou(boxes[best], boxes[i]) ** 2) / sigma)
                if current[i] < skip:
                    del current[i]
    return kept


box_sets = st.integers(0, 40).flatmap(
    lambda n: st.tuples(
        st.lists(
            st.tuples(
                st.integers(0, 200), st.integers(0, 200), st.integers(1, 60), st.integers(1, 60)
            ),
            min_size=n,
            max_size=n,
        ),
        st.lists(st.floats(0.01, 1.0), min_size=n, max_size=n),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
    )
)


def arrays(
    data: tuple[list[tuple[int, int, int, int]], list[float], list[int]],
) -> tuple[list[list[float]], np.ndarray, np.ndarray, np.ndarray]:
    raw, scores, labels = data
    boxes = [[float(x), float(y), float(x + w), float(y + h)] for x, y, w, h in raw]
    return (
        boxes,
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        np.asarray(scores, dtype=np.float64),
        np.asarray(labels, dtype=np.intp),
    )


@settings(max_examples=300)
@given(data=box_sets, threshold=st.floats(0.05, 1.0))
def test_nms_matches_oracle(
    data: tuple[list[tuple[int, int, int, int]], list[float], list[int]], threshold: float
) -> None:
    boxes, b, s, lab = arrays(data)
    kept = non_max_suppression(b, s, lab, threshold)
    assert kept.tolist() == sorted(oracle_nms(boxes, data[1], data[2], threshold))
    for i in kept:  # law: no two kept boxes of a label overlap above the threshold
        for j in kept:
            if i != j and lab[i] == lab[j]:
                assert iou(boxes[i], boxes[j]) <= threshold


@settings(max_examples=300)
@given(data=box_sets, sigma=st.floats(0.05, 2.0), skip=st.floats(0.0, 0.5))
def test_soft_nms_matches_oracle(
    data: tuple[list[tuple[int, int, int, int]], list[float], list[int]], sigma: float, skip: float
) -> None:
    boxes, b, s, lab = arrays(data)
    kept, decayed = soft_non_max_suppression(b, s, lab, sigma, skip)
    expected = oracle_soft(boxes, data[1], data[2], sigma, skip)
    assert kept.tolist() == sorted(expected)
    for index, score in zip(kept.tolist(), decayed.tolist(), strict=True):
        assert score == pytest.approx(expected[index], abs=1e-6)
        assert score <= data[1][index] + 1e-12


def test_nms_basics() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    labels = np.array([0, 0, 0, 1], dtype=np.intp)
    assert non_max_suppression(boxes, scores, labels, 0.5).tolist() == [0, 2, 3]
    assert non_max_suppression(np.empty((0, 4)), np.empty(0), np.empty(0, np.intp), 0.5).size == 0


def test_soft_nms_lowers_overlapping_scores() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11]], float)
    kept, decayed = soft_non_max_suppression(
        boxes, np.array([0.9, 0.8]), np.zeros(2, np.intp), 0.5, 0.0
    )
    assert kept.tolist() == [0, 1]
    overlap = iou(boxes[0].tolist(), boxes[1].tolist())
    assert decayed[1] == pytest.approx(0.8 * math.exp(-(overlap**2) / 0.5))
    assert decayed[1] < 0.8


def test_large_dense_input_matches_oracle() -> None:
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 1500, (1500, 2))
    size = rng.uniform(5, 60, (1500, 2))
    boxes = np.hstack([xy, xy + size])
    scores = rng.uniform(0, 1, 1500)
    labels = rng.integers(0, 3, 1500).astype(np.intp)
    expected = oracle_nms(boxes.tolist(), scores.tolist(), labels.tolist(), 0.3)
    assert non_max_suppression(boxes, scores, labels, 0.3).tolist() == sorted(expected)
