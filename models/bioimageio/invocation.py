"""One invocation of a bioimage.io model on a tile, apart from HTTP.

Its options come from the SageMaker custom attributes (:meth:`Invocation.from_attributes`), its
tile from the request body (:func:`read_tile`: an encoded image or a ``.npy`` array), and
:func:`run` turns what the backend predicts into a ModelRunner FeatureCollection: a
probability map thresholded and split into components, or a label image. No I/O beyond the
backend call.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from models.bioimageio.errors import BackendError
from models.bioimageio.objects import (
    GeometryMode,
    feature_collection,
    objects_to_features,
    probability_to_features,
)
from tiling.encode import decode_tile
from tiling.errors import TilingError

NPY_MAGIC = b"\x93NUMPY"
DEFAULT_CLASS = "urn:bioimageio:object"


class Backend(Protocol):
    """Runs a bioimage.io model on one tile."""

    def predict(self, model_id: str, tile: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Model output for a ``(bands, rows, cols)`` tile, as ``(channels, rows, cols)``.

        Raises:
            UnknownModelError: If there is no such model.
            BackendError: If the model cannot run on this input.
        """
        ...

    def metadata(self, model_id: str) -> dict[str, Any]:
        """What every feature of this model carries in ``modelMetadata``."""
        ...


@dataclass(frozen=True, slots=True)
class Invocation:
    """The per-request options of one invocation."""

    model: str
    output: str = "probability"
    channel: int = 0
    threshold: float = 0.5
    min_area: int = 1
    class_iri: str = DEFAULT_CLASS
    geometry: GeometryMode = "polygon"

    @classmethod
    def from_attributes(cls, attributes: dict[str, str], default_model: str) -> Invocation:
        """Read and check the options.

        Raises:
            ValueError: Naming the attribute and what is wrong with it.
        """
        model = attributes.get("model", default_model)
        if not model:
            raise ValueError("model: no model id given and the server has no default")
        output = attributes.get("output", "probability")
        if output not in {"probability", "labels"}:
            raise ValueError(f"output: {output!r} is not 'probability' or 'labels'")
        geometry = attributes.get("geometry", "polygon")
        if geometry not in {"polygon", "bbox"}:
            raise ValueError(f"geometry: {geometry!r} is not 'polygon' or 'bbox'")
        try:
            channel = int(attributes.get("channel", "0"))
            threshold = float(attributes.get("threshold", "0.5"))
            min_area = int(attributes.get("min_area", "1"))
        except ValueError as err:
            raise ValueError(f"channel, threshold and min_area must be numbers: {err}") from err
        if channel < 0 or min_area < 1 or not np.isfinite(threshold):
            raise ValueError("channel must be >= 0, min_area >= 1 and threshold finite")
        return cls(
            model=model,
            output=output,
            channel=channel,
            threshold=threshold,
            min_area=min_area,
            class_iri=attributes.get("class_iri", DEFAULT_CLASS),
            geometry="bbox" if geometry == "bbox" else "polygon",
        )


def read_tile(body: bytes) -> npt.NDArray[Any]:
    """A ``(bands, rows, cols)`` array from an encoded tile or a ``.npy`` file (2D or 3D).

    Raises:
        ValueError: If the body is neither.
    """
    if body.startswith(NPY_MAGIC):
        array = np.load(io.BytesIO(body), allow_pickle=False)
        if array.ndim == 2:  # noqa: PLR2004
            array = array[np.newaxis]
        if array.ndim != 3:  # noqa: PLR2004
            raise ValueError(f"a .npy tile must be 2D or 3D, got shape {array.shape}")
        return np.asarray(array)
    try:
        return decode_tile(body)
    except TilingError as err:
        raise ValueError(f"cannot decode tile: {err}") from err


def run(
    backend: Backend,
    invocation: Invocation,
    tile: npt.NDArray[Any],
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The FeatureCollection for one tile; with ``timings``, the seconds spent in ``predict``
    and ``vectorise`` are put there."""
    began = time.perf_counter()
    output = backend.predict(invocation.model, tile)
    predicted = time.perf_counter()
    if output.ndim == 2:  # noqa: PLR2004
        output = output[np.newaxis]
    if invocation.channel >= output.shape[0]:
        raise BackendError(
            f"channel {invocation.channel} asked for, the model has {output.shape[0]} output"
            " channel(s)"
        )
    plane = output[invocation.channel]
    if plane.shape != tile.shape[1:]:
        raise BackendError(f"model output {plane.shape} does not match the tile {tile.shape[1:]}")
    metadata = backend.metadata(invocation.model)
    if invocation.output == "labels":
        features = objects_to_features(
            np.rint(plane).astype(np.int32),
            invocation.class_iri,
            min_area=invocation.min_area,
            mode=invocation.geometry,
            model_metadata=metadata,
        )
    else:
        features = probability_to_features(
            plane,
            invocation.threshold,
            invocation.class_iri,
            min_area=invocation.min_area,
            mode=invocation.geometry,
            model_metadata=metadata,
        )
    if timings is not None:
        timings["predict"] = predicted - began
        timings["vectorise"] = time.perf_counter() - predicted
    return feature_collection(features)
