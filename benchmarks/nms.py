"""Duplicate removal at scale: about 1 000 000 boxes from a 40000 x 40000 image, 512/128 tiles.

Objects are scattered over the image; every tile reports the objects that lie inside it (about
100 per tile) with a little jitter, so objects in overlap bands are reported by 2 to 4 tiles.
Times, single-threaded: the overlap-band selection plus grid NMS that the worker runs, the same
for Soft-NMS, and, when installed (``pip install ensemble-boxes``), ``ensemble_boxes.nms`` on the
same candidates; on a subset if the full set would take too long.

    python -m benchmarks.nms [--size 40000] [--per-tile 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from postprocessing.nms import non_max_suppression, soft_non_max_suppression
from postprocessing.overlap import in_overlap_bands
from tiling.grid import axis_origins

TILE, OVERLAP = 512, 128


def reported_boxes(size: int, per_tile: int, seed: int = 0) -> tuple[npt.NDArray[Any], ...]:
    """Boxes, scores, labels as the tiles of the grid would report them."""
    rng = np.random.default_rng(seed)
    origins = np.asarray(axis_origins(size, TILE, OVERLAP))
    objects = int(per_tile * size * size / (TILE * TILE))
    wh = rng.uniform(8, 40, (objects, 2))
    xy = rng.uniform(0, size - 40, (objects, 2))
    labels = rng.integers(0, 3, objects)
    boxes, scores, out_labels = [], [], []
    for axis_lo in origins:
        in_col = np.flatnonzero((xy[:, 0] >= axis_lo) & (xy[:, 0] + wh[:, 0] <= axis_lo + TILE))
        for row_lo in origins:
            sel = in_col[
                (xy[in_col, 1] >= row_lo) & (xy[in_col, 1] + wh[in_col, 1] <= row_lo + TILE)
            ]
            jitter = rng.normal(0, 0.5, (sel.size, 2))
            lo = xy[sel] + jitter
            boxes.append(np.hstack([lo, lo + wh[sel]]))
            scores.append(rng.uniform(0.3, 1.0, sel.size))
            out_labels.append(labels[sel])
    return (
        np.concatenate(boxes),
        np.concatenate(scores),
        np.concatenate(out_labels).astype(np.intp),
        origins,
    )


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds over ``repeat`` calls and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def ensemble_nms(boxes: npt.NDArray[Any], scores: Any, labels: Any, size: int) -> Any:
    """``ensemble_boxes.nms`` on normalised boxes."""
    from ensemble_boxes import nms  # noqa: PLC0415 - optional

    return nms([boxes / size], [scores], [labels], iou_thr=0.5)


def main() -> None:
    """Build the input, time each method, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=40000)
    parser.add_argument("--per-tile", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--subset", type=int, default=20000, help="boxes for ensemble_boxes")
    args = parser.parse_args()
    boxes, scores, labels, origins = reported_boxes(args.size, args.per_tile)
    print(f"{boxes.shape[0]} boxes reported by {origins.size**2} tiles")

    def ours() -> npt.NDArray[Any]:
        band = in_overlap_bands(boxes, origins, origins, TILE, TILE)
        index = np.flatnonzero(band)
        kept = non_max_suppression(boxes[index], scores[index], labels[index], 0.5)
        keep = ~band
        keep[index[kept]] = True
        return keep

    seconds, keep = timed(ours, args.repeat)
    band = in_overlap_bands(boxes, origins, origins, TILE, TILE)
    print(
        f"NMS (bands + grid): {seconds:.2f} s median of {args.repeat};"
        f" {int(band.sum())} candidates, {int(keep.sum())} kept"
    )

    def soft() -> Any:
        index = np.flatnonzero(band)
        return soft_non_max_suppression(boxes[index], scores[index], labels[index], 0.5, 0.001)

    soft_seconds, _ = timed(soft, 1)
    print(f"Soft-NMS (bands + grid, Gaussian sigma 0.5): {soft_seconds:.2f} s")

    if importlib.util.find_spec("ensemble_boxes") is None:
        print("ensemble_boxes not installed: no comparison")
        return
    index = np.flatnonzero(band)[: args.subset]
    sub = (boxes[index], scores[index], labels[index])
    ensemble_nms(sub[0][:100], sub[1][:100], sub[2][:100], args.size)  # compile numba first
    theirs, _ = timed(lambda: ensemble_nms(*sub, args.size), 1)
    mine, _ = timed(lambda: non_max_suppression(*sub, 0.5), args.repeat)
    print(
        f"on {index.size} candidates: ensemble_boxes.nms {theirs:.2f} s,"
        f" grid NMS {mine:.3f} s, ratio {theirs / mine:.0f}x"
    )


if __name__ == "__main__":
    main()
