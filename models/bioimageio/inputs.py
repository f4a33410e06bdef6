"""The inputs of a model-runner ``infer`` call, as arrays in each input tensor's layout.

An input is a numpy array (over RPC), a ``file_path`` from ``get_upload_url``, an HTTP/S
URL, or, for models with several inputs, a dict of those by input id. Files are ``.npy``
(any shape: used as they are when they have the tensor's dimensions), ``.tif``/``.tiff``
(every page of a stack is kept: the pages become the model's ``z`` axis, or its channels),
and ``.png``/``.jpg`` images. Arrays and ``.npy`` files are taken as they are: they must have
the tensor's dimensions. Images and TIFF files are ``(rows, cols)`` or
``(pages-or-bands, rows, cols)`` and are put into the tensor's layout.

Pure functions on bytes and arrays; no I/O.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from models.bioimageio.axes import Axis, AxisError, check_input, rearrange
from models.bioimageio.errors import ApiError
from tiling.encode import decode_tile
from tiling.errors import TilingError

FILE_TYPES = (".npy", ".png", ".tiff", ".tif", ".jpeg", ".jpg")
IMAGE_TYPES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})
_PLANE_DIMS = 2
_STACK_DIMS = 3


def file_type(name: str) -> str:
    """The type suffix of a file path or URL path (``.npy``), lower case; '' when none."""
    path = name.split("?", 1)[0].lower()
    return next((t for t in FILE_TYPES if path.endswith(t)), "")


def decode_file(data: bytes, kind: str, what: str) -> npt.NDArray[Any]:
    """The array in a ``kind`` file (``.npy``, ``.tif``, ...).

    Raises:
        ApiError: 400 naming ``what`` when the file cannot be read as that type.
    """
    try:
        if kind == ".npy":
            return np.asarray(np.load(io.BytesIO(data), allow_pickle=False))
        if kind in {".tif", ".tiff"}:
            import tifffile  # noqa: PLC0415  (comes with bioimageio.spec; only for TIFF input)

            return np.asarray(tifffile.imread(io.BytesIO(data)))
        if kind in {".png", ".jpg", ".jpeg"}:
            return decode_tile(data)
    except (ValueError, OSError, TilingError) as err:
        raise ApiError(400, f"inputs: {what} is not a readable {kind} file: {err}") from None
    raise ApiError(
        400, f"inputs: {what} has no file type this server reads ({', '.join(FILE_TYPES)})"
    )


def fit_input(
    array: npt.NDArray[Any], axes: Sequence[Axis], name: str, kind: str = ".npy"
) -> npt.NDArray[Any]:
    """``array`` (from a ``kind`` file) in the layout of input ``name`` with ``axes``, checked.

    The bands of a PNG/JPEG are averaged for a one-channel model.

    Raises:
        ApiError: 400 saying how the array does not fit the input.
    """
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ApiError(400, f"inputs: pixels of type {array.dtype} cannot be a model input")
    if kind in IMAGE_TYPES and array.ndim != len(axes):
        array = _arrange(array, axes, name, image=kind not in {".tif", ".tiff"})
    try:
        check_input(array, axes, name)
    except AxisError as err:
        raise ApiError(400, f"inputs: {err}") from None
    return array


def _arrange(
    array: npt.NDArray[Any], axes: Sequence[Axis], name: str, image: bool
) -> npt.NDArray[Any]:
    """A ``(rows, cols)`` or ``(planes, rows, cols)`` array in the tensor's layout."""
    if array.ndim == _PLANE_DIMS:
        array = array[np.newaxis]
    if array.ndim != _STACK_DIMS:
        raise ApiError(
            400,
            f"inputs: input {name!r} has axes ({', '.join(a.id for a in axes)}), got shape"
            f" {tuple(array.shape)}",
        )
    names = [_name(axis) for axis in axes]
    channels = next((a.channels for a in axes if a.kind == "channel"), 1)
    planes = int(array.shape[0])
    if "z" in names and planes > 1:
        first = "z"
    elif planes == channels:
        first = "channel"
    elif image and channels == 1:
        array, first = array.mean(axis=0, keepdims=True, dtype=np.float32), "channel"
    else:
        raise ApiError(
            400,
            f"inputs: input {name!r} takes {channels} channel(s) and has no z axis; the"
            f" file has {planes} planes (pages or bands), none of which is dropped",
        )
    try:
        return rearrange(array[np.newaxis], ["batch", first, "y", "x"], names)
    except AxisError as err:
        raise ApiError(400, f"inputs: input {name!r}: {err}") from None


def _name(axis: Axis) -> str:
    return axis.kind if axis.kind in {"batch", "channel"} else axis.id
