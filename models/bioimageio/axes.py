"""Tensor axes of a bioimage.io model, and moving tiles in and out of the model's layout.

Both backends use this: the local one reads the axes from a loaded description, the remote one
from the RDF the service returns (format 0.5 axis lists, or 0.4 axis strings such as
``"bcyx"``). A tile is ``(bands, rows, cols)``; the model wants its own axis order, a channel
count and spatial sizes of the form ``min + n * step`` (or one fixed size).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

# The order tiles and model outputs are handled in here (batch first, one sample).
NAMED_LAYOUT = ("batch", "channel", "y", "x")
# 0.4 axis letters.
_LETTERS = {"b": "batch", "c": "channel", "x": "space", "y": "space", "z": "space", "t": "time"}


class AxisError(ValueError):
    """A tensor or a description does not fit the model's axes (the message says how)."""


@dataclass(frozen=True, slots=True)
class Axis:
    """One axis: its type (batch, channel, space, ...), its id, and what sizes it takes.

    ``step`` 0 with ``minimum`` > 0 is one fixed size; ``minimum`` 0 means any size (outputs
    whose size follows the input).
    """

    kind: str
    id: str
    minimum: int = 0
    step: int = 0
    channels: int = 1

    def valid_size(self, size: int) -> int:
        """The smallest size >= ``size`` this axis accepts."""
        if self.minimum == 0:
            return size
        if self.step == 0:
            if size > self.minimum:
                raise AxisError(f"axis {self.id!r} takes {self.minimum} px, the tile has {size}")
            return self.minimum
        if size <= self.minimum:
            return self.minimum
        return self.minimum + math.ceil((size - self.minimum) / self.step) * self.step


def axes_from_rdf(tensor: Mapping[str, Any], shape: Any = None) -> list[Axis]:
    """The axes of one tensor entry of an RDF (``inputs[i]`` / ``outputs[i]``).

    Raises:
        AxisError: If the entry has no axes this module understands.
    """
    axes = tensor.get("axes")
    if isinstance(axes, str):
        return _axes_v04(axes, tensor.get("shape", shape))
    if not isinstance(axes, list):
        raise AxisError(f"tensor {tensor.get('id', tensor.get('name'))!r} has no axes")
    result = []
    for axis in axes:
        kind = str(axis.get("type", ""))
        axis_id = str(axis.get("id", kind))
        if kind == "channel":
            names = axis.get("channel_names") or []
            result.append(Axis(kind, axis_id, channels=max(len(names), 1)))
            continue
        size = axis.get("size")
        if isinstance(size, int):
            result.append(Axis(kind, axis_id, minimum=size))
        elif isinstance(size, Mapping) and "min" in size:
            result.append(
                Axis(kind, axis_id, minimum=int(size["min"]), step=int(size.get("step", 0) or 0))
            )
        else:
            result.append(Axis(kind, axis_id))
    return result


def _axes_v04(letters: str, shape: Any) -> list[Axis]:
    """Axes of a 0.4 tensor: an axis string and a shape (a list, or ``min``/``step`` lists)."""
    fixed = shape if isinstance(shape, list) else None
    minima = shape.get("min") if isinstance(shape, Mapping) else None
    steps = shape.get("step") if isinstance(shape, Mapping) else None
    result = []
    for index, letter in enumerate(letters):
        kind = _LETTERS.get(letter)
        if kind is None:
            raise AxisError(f"axis {letter!r} of {letters!r} is not supported")
        if kind == "batch":
            result.append(Axis(kind, "batch"))
        elif kind == "channel":
            count = int(fixed[index]) if fixed else int(minima[index]) if minima else 1
            result.append(Axis(kind, "channel", channels=max(count, 1)))
        elif fixed:
            result.append(Axis(kind, letter, minimum=int(fixed[index])))
        elif minima and steps:
            result.append(Axis(kind, letter, minimum=int(minima[index]), step=int(steps[index])))
        else:
            result.append(Axis(kind, letter))
    return result


def channel_count(axes: Sequence[Axis]) -> int:
    """How many channels the tensor has (1 without a channel axis)."""
    return next((axis.channels for axis in axes if axis.kind == "channel"), 1)


def to_model_layout(tile: npt.NDArray[Any], axes: Sequence[Axis]) -> npt.NDArray[np.float32]:
    """A ``(bands, rows, cols)`` tile as the model's float32 input, padded with zeros.

    A one-channel model given several bands gets their mean.

    Raises:
        AxisError: If the band count does not fit or an axis type is not supported.
    """
    bands, rows, cols = (int(n) for n in tile.shape)
    channels = channel_count(axes)
    pixels = tile.astype(np.float32, copy=False)
    if channels != bands:
        if channels != 1:
            raise AxisError(f"the model takes {channels} channels, the tile has {bands}")
        pixels = pixels.mean(axis=0, keepdims=True, dtype=np.float32)
    sizes = {"y": rows, "x": cols}
    padded_sizes = {a.id: a.valid_size(sizes[a.id]) for a in axes if a.id in sizes}
    height, width = padded_sizes.get("y", rows), padded_sizes.get("x", cols)
    if (height, width) == (rows, cols):
        padded = pixels[np.newaxis]
    else:
        padded = np.zeros((1, pixels.shape[0], height, width), dtype=np.float32)
        padded[0, :, :rows, :cols] = pixels
    return rearrange(padded, NAMED_LAYOUT, layout_names(axes))


def from_model_layout(array: npt.NDArray[Any], axes: Sequence[Axis]) -> npt.NDArray[np.float32]:
    """A model output (first batch item) as ``(channels, rows, cols)`` float32.

    Raises:
        AxisError: If the array does not have the output's dimensions.
    """
    layout = layout_names(axes)
    if array.ndim != len(layout):
        raise AxisError(f"output has {array.ndim} dimensions, the model declares {len(layout)}")
    result = rearrange(np.asarray(array), layout, NAMED_LAYOUT)
    return np.asarray(result[0], dtype=np.float32)


def check_input(array: npt.NDArray[Any], axes: Sequence[Axis], name: str) -> None:
    """Check a whole input tensor (in the model's layout) against its axes.

    Raises:
        AxisError: Naming the input, the axis and what is wrong.
    """
    layout = [axis.id for axis in axes]
    if array.ndim != len(axes):
        raise AxisError(
            f"input {name!r} has axes ({', '.join(layout)}): expected {len(axes)} dimensions,"
            f" got shape {tuple(array.shape)}"
        )
    for axis, size in zip(axes, array.shape, strict=True):
        if axis.kind == "channel" and size != axis.channels:
            raise AxisError(
                f"input {name!r}: the model takes {axis.channels} channel(s), got {size}"
            )
        if axis.kind == "batch" and size != 1:
            raise AxisError(f"input {name!r}: one sample at a time (batch 1), got {size}")
        if axis.kind == "space" and size < axis.minimum:
            raise AxisError(
                f"input {name!r}: axis {axis.id!r} is {size} px, the model needs at least"
                f" {axis.minimum}"
            )


def into_layout(planes: npt.NDArray[Any], axes: Sequence[Axis]) -> npt.NDArray[Any]:
    """A ``(channels, rows, cols)`` array in the layout of ``axes`` (batch of one)."""
    return rearrange(planes[np.newaxis], NAMED_LAYOUT, layout_names(axes))


def layout_names(axes: Sequence[Axis]) -> list[str]:
    """Each axis as ``batch``, ``channel``, ``y`` or ``x`` (other axes are refused).

    Raises:
        AxisError: For time, index or z axes.
    """
    names = []
    for axis in axes:
        if axis.kind in {"batch", "channel"}:
            names.append(axis.kind)
        elif axis.kind == "space" and axis.id in {"x", "y"}:
            names.append(axis.id)
        else:
            raise AxisError(f"{axis.kind} axis {axis.id!r} is not supported (2D models only)")
    return names


def rearrange(
    array: npt.NDArray[Any], source: Sequence[str], target: Sequence[str]
) -> npt.NDArray[Any]:
    """Move axes named ``source`` into the order ``target``: axes only in ``target`` are added
    (size 1), axes only in ``source`` dropped (they must have size 1).

    Raises:
        AxisError: If a dropped axis is longer than 1.
    """
    for name in [n for n in source if n not in target]:
        axis = list(source).index(name)
        if array.shape[axis] != 1:
            raise AxisError(f"axis {name!r} has size {array.shape[axis]}, expected 1")
        array = np.squeeze(array, axis=axis)
        source = [n for n in source if n != name]
    for name in [n for n in target if n not in source]:
        array = array[np.newaxis]
        source = [name, *source]
    return np.transpose(array, [list(source).index(n) for n in target])
