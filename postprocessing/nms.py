"""Non-maximum suppression over axis-aligned boxes, per class. Pure numpy; no I/O."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from postprocessing.overlap import overlapping_pairs

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


def box_iou(box: FloatArray, boxes: FloatArray) -> FloatArray:
    """IoU of one ``[minx, miny, maxx, maxy]`` box with each row of ``boxes``."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    iou: FloatArray = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou


def non_max_suppression(
    boxes: FloatArray,
    scores: FloatArray,
    labels: IntArray,
    iou_threshold: float,
) -> IntArray:
    """Indices of the boxes NMS keeps, highest score first.

    A box is dropped when its IoU with a kept, higher-scoring box of the same label exceeds
    ``iou_threshold``. Ties in score keep the lower index first, so the result does not depend
    on the order of equal boxes beyond their index.

    Args:
        boxes: ``(N, 4)`` array of ``[minx, miny, maxx, maxy]``.
        scores: ``(N,)`` scores.
        labels: ``(N,)`` integer class labels; boxes of different labels never suppress.
        iou_threshold: In ``(0, 1]``.

    Returns:
        Kept indices into the inputs.
    """
    count = boxes.shape[0]
    if count == 0:
        return np.empty(0, dtype=np.intp)
    order = np.lexsort((np.arange(count), -scores))
    suppressed = np.zeros(count, dtype=bool)
    keep: list[int] = []
    for position, index in enumerate(order):
        if suppressed[index]:
            continue
        keep.append(int(index))
        rest = order[position + 1 :]
        rest = rest[~suppressed[rest] & (labels[rest] == labels[index])]
        if rest.size:
            overlaps = box_iou(boxes[index], boxes[rest])
            suppressed[rest[overlaps > iou_threshold]] = True
    return np.asarray(keep, dtype=np.intp)


def soft_non_max_suppression(
    boxes: FloatArray,
    scores: FloatArray,
    labels: IntArray,
    sigma: float,
    skip_box_threshold: float,
) -> tuple[IntArray, FloatArray]:
    """Gaussian Soft-NMS: decay overlapping scores instead of dropping the boxes.

    Repeatedly takes the highest remaining score, then multiplies the score of every remaining
    box of the same label by ``exp(-iou**2 / sigma)``; boxes whose score falls below
    ``skip_box_threshold`` are dropped.

    Returns:
        Kept indices (in the order they were selected) and their decayed scores.
    """
    current = scores.astype(np.float64, copy=True)
    remaining = np.flatnonzero(current >= skip_box_threshold)
    keep: list[int] = []
    kept_scores: list[float] = []
    while remaining.size:
        best = int(remaining[np.argmax(current[remaining])])
        keep.append(best)
        kept_scores.append(float(current[best]))
        remaining = remaining[remaining != best]
        same = remaining[labels[remaining] == labels[best]]
        if same.size:
            overlaps = box_iou(boxes[best], boxes[same])
            current[same] *= np.exp(-(overlaps**2) / sigma)
        remaining = remaining[current[remaining] >= skip_box_threshold]
    return np.asarray(keep, dtype=np.intp), np.asarray(kept_scores, dtype=np.float64)


def sparse_non_max_suppression(
    boxes: FloatArray, scores: FloatArray, labels: IntArray, iou_threshold: float
) -> IntArray:
    """The kept set of :func:`non_max_suppression`, computed on the overlap graph.

    Only intersecting same-label pairs (found with a grid) are compared. Greedy NMS is then
    resolved in rounds: a box is kept once every higher-ranked box that would suppress it is
    itself suppressed, and suppressed once one of them is kept.

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


def sparse_soft_non_max_suppression(
    boxes: FloatArray,
    scores: FloatArray,
    labels: IntArray,
    sigma: float,
    skip_box_threshold: float,
) -> tuple[IntArray, FloatArray]:
    """The result of :func:`soft_non_max_suppression`, computed on the overlap graph.

    Soft-NMS only changes the scores of intersecting same-label boxes. A box whose current
    score beats every remaining neighbour's would be selected by the sequential algorithm
    before any of them, so all such boxes are selected together, round after round, and decay
    their remaining neighbours (decays multiply, so their order does not matter).

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
