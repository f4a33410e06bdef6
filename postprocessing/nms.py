"""Non-maximum suppression over axis-aligned boxes, per class. Pure numpy; no I/O."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from postprocessing.overlap import overlapping_pairs

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


def non_max_suppression(
    boxes: FloatArray, scores: FloatArray, labels: IntArray, iou_threshold: float
) -> IntArray:
    """Greedy per-label NMS: the boxes kept when, in order of score (ties: lower index), each
    box is dropped if its IoU with a kept box of its label exceeds ``iou_threshold``.

    Computed on the overlap graph: only same-label pairs above the threshold (found with a
    grid) are compared, and the greedy order is resolved in rounds: a box is kept once every
    higher-ranked box that would suppress it is itself suppressed, and suppressed once one of
    them is kept.

    Returns:
        Kept indices in ascending order.
    """
    count = boxes.shape[0]
    first, second, _ = overlapping_pairs(boxes, labels, iou_threshold)
    rank = np.empty(count, dtype=np.intp)
    rank[np.lexsort((np.arange(count), -scores))] = np.arange(count)
    forward = rank[first] < rank[second]
    source = np.where(forward, first, second)
    target = np.where(forward, second, first)
    unknown, kept, dropped = 0, 1, 2
    status = np.full(count, kept, dtype=np.int8)
    status[target] = unknown
    while source.size:
        status[target[status[source] == kept]] = dropped
        live = (status[target] == unknown) & (status[source] != dropped)
        source, target = source[live], target[live]
        waiting = np.bincount(target, minlength=count)
        status[(status == unknown) & (waiting == 0)] = kept
    return np.flatnonzero(status == kept)


def soft_non_max_suppression(
    boxes: FloatArray,
    scores: FloatArray,
    labels: IntArray,
    sigma: float,
    skip_box_threshold: float,
) -> tuple[IntArray, FloatArray]:
    """Gaussian Soft-NMS: the sequential algorithm repeatedly selects the highest remaining
    score (ties: lower index) and multiplies the score of each remaining same-label box by
    ``exp(-iou**2 / sigma)``, dropping boxes whose score falls below ``skip_box_threshold``.

    Computed on the overlap graph, since only intersecting same-label boxes change each
    other's scores. A box whose current score beats every remaining neighbour's would be
    selected by the sequential algorithm before any of them, so all such boxes are selected
    together, round after round, and decay their remaining neighbours (decays multiply, so
    their order does not matter).

    Returns:
        Kept indices in ascending order and their decayed scores.
    """
    count = boxes.shape[0]
    first, second, iou = overlapping_pairs(boxes, labels)
    decay = np.exp(-(iou**2) / sigma)
    current = scores.astype(np.float64, copy=True)
    final = np.full(count, -np.inf)
    remaining = current >= skip_box_threshold
    while remaining.any():
        live = remaining[first] & remaining[second]
        first, second, decay = first[live], second[live], decay[live]
        # Sequential order: higher score first, then lower index.
        first_wins = (current[first] > current[second]) | (
            (current[first] == current[second]) & (first < second)
        )
        beaten = np.zeros(count, dtype=bool)
        beaten[np.where(first_wins, second, first)] = True
        chosen = remaining & ~beaten
        final[chosen] = current[chosen]
        remaining &= ~chosen
        for source, target in ((first, second), (second, first)):
            hit = chosen[source] & remaining[target]
            np.multiply.at(current, target[hit], decay[hit])
        remaining &= current >= skip_box_threshold
    keep = np.flatnonzero(final > -np.inf)
    return keep, final[keep]
