"""Overlap bands and grid pairs against brute force."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from postprocessing.overlap import in_overlap_bands, overlapping_pairs


def brute_pairs(boxes: np.ndarray, labels: np.ndarray) -> set[tuple[int, int]]:
    found = set()
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            if (
                labels[i] == labels[j]
                and min(a[2], b[2]) > max(a[0], b[0])
                and min(a[3], b[3]) > max(a[1], b[1])
            ):
                found.add((i, j))
    return found


@settings(max_examples=150)
@given(
    data=st.lists(
        st.tuples(
            st.floats(0, 1000),
            st.floats(0, 1000),
            st.floats(0.5, 80),
            st.floats(0.5, 80),
            st.integers(0, 1),
        ),
        min_size=0,
        max_size=200,
    ),
    giants=st.lists(
        st.tuples(st.floats(0, 500), st.floats(0, 500), st.floats(100, 600)), max_size=5
    ),
)
def test_pairs_match_brute_force(
    data: list[tuple[float, float, float, float, int]], giants: list[tuple[float, float, float]]
) -> None:
    rows = [(x, y, x + w, y + h, label) for x, y, w, h, label in data]
    rows += [(x, y, x + size, y + size, 0) for x, y, size in giants]
    boxes = np.array([r[:4] for r in rows], dtype=np.float64).reshape(-1, 4)
    labels = np.array([r[4] for r in rows], dtype=np.intp)
    first, second, iou = overlapping_pairs(boxes, labels)
    assert (iou > 0).all()
    got = set(zip(first.tolist(), second.tolist(), strict=True))
    assert len(got) == first.size  # each pair once
    assert got == brute_pairs(boxes, labels)


def test_overlap_bands() -> None:
    # Tiles of 512 at origins 0 and 384 on both axes: the band is 384..512.
    origins = np.array([0, 384])
    boxes = np.array(
        [
            [10, 10, 50, 50],  # tile (0, 0) only
            [400, 10, 450, 50],  # in the vertical band
            [600, 600, 700, 700],  # tile (1, 1) only
            [370, 370, 390, 390],  # crosses into the band corner
            [100, 500, 200, 600],  # crosses the horizontal band
            [0, 384, 10, 384.5],  # touches the band edge from inside
        ],
        dtype=np.float64,
    )
    mask = in_overlap_bands(boxes, origins, origins, 512, 512)
    assert mask.tolist() == [False, True, False, True, True, True]
