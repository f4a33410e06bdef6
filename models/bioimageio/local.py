"""The local backend: bioimage.io model packages run in this process with bioimageio.core.

Each package (a folder with ``rdf.yaml``, the ``rdf.yaml`` itself, or a ``.zip``; on disk or
in S3 as ``s3://bucket/model.zip`` or ``s3://bucket/folder/``) is loaded once, on first use,
into a prediction pipeline for the chosen weights format. Calls to one model are serialised
(a pipeline is not made for concurrent use); different models run side by side. Tiles of any
size are padded up to the nearest size the model accepts (its ``min + n*step`` axis sizes),
larger ones are predicted block by block, and the output is cropped back to the tile.
"""

from __future__ import annotations

import math
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import boto3
import numpy as np
import numpy.typing as npt
from bioimageio.core import (
    Sample,
    Tensor,
    create_prediction_pipeline,
    load_model_description,
)
from botocore.exceptions import BotoCoreError, ClientError

from models.bioimageio.adapter import BackendError, UnknownModelError

WeightsFormat = Literal[
    "keras_hdf5",
    "keras_v3",
    "onnx",
    "pytorch_state_dict",
    "tensorflow_saved_model_bundle",
    "torchscript",
]
WEIGHTS_FORMATS: tuple[WeightsFormat, ...] = get_args(WeightsFormat)
# What loading a package or running a model raises: bad or missing files, a description that
# does not validate (pydantic's errors are ValueErrors), a runtime that refuses the model.
MODEL_ERRORS = (ValueError, OSError, RuntimeError, KeyError, TypeError)

# Blocks of min + 16*step pixels per side for tiles larger than one block (bioimageio.core's
# "blocksize parameter").
BLOCKSIZE_PARAMETER = 16


def valid_size(size: int, axis_size: Any) -> int:
    """The smallest size >= ``size`` that an axis accepts (fixed or ``min + n*step``)."""
    if isinstance(axis_size, int):
        if size > axis_size:
            raise BackendError(f"the model takes {axis_size} px along an axis, the tile has {size}")
        return axis_size
    minimum, step = int(axis_size.min), int(axis_size.step)
    if size <= minimum:
        return minimum
    return minimum + math.ceil((size - minimum) / step) * step


class LocalBackend:
    """Runs bioimage.io model packages with bioimageio.core."""

    def __init__(
        self, packages: Mapping[str, str], weights_format: WeightsFormat | None = None
    ) -> None:
        """Serve ``packages`` (model id -> package path) with ``weights_format`` weights
        (None: the first format the package and this machine support)."""
        self._packages = dict(packages)
        self._weights_format = weights_format
        self._loaded: dict[str, tuple[Any, Any]] = {}
        self._locks = {model_id: threading.Lock() for model_id in self._packages}

    def _load(self, model_id: str) -> tuple[Any, Any]:
        """(description, prediction pipeline) of a model, loaded on first use."""
        loaded = self._loaded.get(model_id)
        if loaded is not None:
            return loaded
        source = self._packages[model_id]
        if source.startswith("s3://"):
            source = fetch_package(source, Path(tempfile.mkdtemp(prefix=f"bioimageio-{model_id}-")))
        try:
            # IO checks hash and fetch every referenced file; local packages need neither.
            description = load_model_description(source, perform_io_checks=False)
            pipeline = create_prediction_pipeline(description, weight_format=self._weights_format)
        except MODEL_ERRORS as err:
            raise BackendError(f"cannot load model package {source}: {err}") from err
        self._loaded[model_id] = (description, pipeline)
        return description, pipeline

    def metadata(self, model_id: str) -> dict[str, Any]:
        """The model's id, name and weights format."""
        description, _ = self._load(model_id)
        return {
            "modelId": model_id,
            "modelName": str(description.name),
            "weightsFormat": self._weights_format or "default",
        }

    def predict(self, model_id: str, tile: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Run the model on a ``(bands, rows, cols)`` tile; ``(channels, rows, cols)`` out."""
        if model_id not in self._packages:
            raise UnknownModelError(f"known models: {', '.join(sorted(self._packages))}")
        with self._locks[model_id]:
            description, pipeline = self._load(model_id)
            return self._predict(description, pipeline, tile)

    def _predict(
        self, description: Any, pipeline: Any, tile: npt.NDArray[Any]
    ) -> npt.NDArray[np.float32]:
        if len(description.inputs) != 1:
            raise BackendError("only models with one input tensor are supported")
        spec = description.inputs[0]
        axes = {str(axis.type): axis for axis in spec.axes}
        if "space" not in axes:
            raise BackendError("the model's input has no spatial axes")
        bands, rows, cols = (int(n) for n in tile.shape)
        channels = len(axes["channel"].channel_names) if "channel" in axes else 1
        pixels = tile.astype(np.float32)
        if channels != bands:
            if channels != 1:
                raise BackendError(f"the model takes {channels} channels, the tile has {bands}")
            pixels = pixels.mean(axis=0, keepdims=True)
        spatial = [axis for axis in spec.axes if axis.type == "space"]
        sizes = {
            str(axis.id): valid_size(rows if str(axis.id) == "y" else cols, axis.size)
            for axis in spatial
        }
        height, width = int(sizes.get("y", rows)), int(sizes.get("x", cols))
        padded = np.zeros((1, pixels.shape[0], height, width), dtype=np.float32)
        padded[:, :, :rows, :cols] = pixels
        array = _arrange(padded, [str(a.type) for a in spec.axes], spec)
        too_big = any(
            not isinstance(axis.size, int)
            and sizes[str(axis.id)] > axis.size.min + BLOCKSIZE_PARAMETER * axis.size.step
            for axis in spatial
        )
        try:
            # The pipeline itself, not bioimageio.core.predict: predict() unloads the pipeline
            # when it returns, which leaves torchscript/pytorch adapters unusable next time.
            tensor = Tensor.from_numpy(array, dims=tuple(str(axis.id) for axis in spec.axes))
            sample = Sample(members={spec.id: tensor}, stat={}, id="tile")
            if too_big:
                sample = pipeline.predict_sample_with_blocking(sample, ns=BLOCKSIZE_PARAMETER)
            else:
                sample = pipeline.predict_sample_without_blocking(sample)
        except MODEL_ERRORS as err:
            raise BackendError(f"prediction failed: {err}") from err
        output = next(iter(sample.members.values()))
        data = output.data.transpose(
            *[d for d in ("batch", "channel", "y", "x") if d in output.dims]
        )
        result = np.asarray(data.to_numpy(), dtype=np.float32)
        if "batch" in output.dims:
            result = result[0]
        if result.ndim == 2:  # noqa: PLR2004
            result = result[np.newaxis]
        return np.ascontiguousarray(result[:, :rows, :cols])


def _arrange(padded: npt.NDArray[np.float32], axis_types: list[str], spec: Any) -> Any:
    """The ``(1, C, Y, X)`` array in the order of the model's input axes."""
    order = {"batch": 0, "channel": 1}
    source = []
    for axis, kind in zip(spec.axes, axis_types, strict=True):
        if kind in order:
            source.append(order[kind])
        elif kind == "space":
            source.append(2 if str(axis.id) == "y" else 3)
        else:
            raise BackendError(f"input axis type {kind!r} is not supported")
    missing = [i for i in range(4) if i not in source]
    arranged = padded.squeeze(axis=tuple(i for i in missing if padded.shape[i] == 1))
    kept = [i for i in range(4) if i not in missing]
    return np.transpose(arranged, [kept.index(i) for i in source])


def fetch_package(url: str, directory: Path) -> str:
    """Download a package from S3 into ``directory``; the local path to load.

    ``s3://bucket/key.zip`` (or ``.yaml``) is one object; ``s3://bucket/prefix/`` a folder with
    ``rdf.yaml`` and the files it names.

    Raises:
        BackendError: If it cannot be downloaded.
    """
    bucket, _, key = url.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")
    try:
        if not key.endswith("/"):
            target = directory / Path(key).name
            s3.download_file(bucket, key, str(target))
            return str(target)
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
        for item in (obj for page in pages for obj in page.get("Contents", [])):
            relative = item["Key"][len(key) :]
            if not relative or ".." in Path(relative).parts:
                continue
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(target))
    except (BotoCoreError, ClientError) as err:
        raise BackendError(f"cannot download model package {url}: {err}") from err
    rdf = directory / "rdf.yaml"
    if not rdf.exists():
        raise BackendError(f"model package {url} has no rdf.yaml")
    return str(rdf)
