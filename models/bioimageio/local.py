"""The local backend: bioimage.io model packages run in this process with bioimageio.core.

Each package (a folder with ``rdf.yaml``, the ``rdf.yaml`` itself, or a ``.zip``; on disk or
in S3 as ``s3://bucket/model.zip`` or ``s3://bucket/folder/``) is loaded once, on first use,
into a prediction pipeline for the chosen weights format. Calls to one model are serialised
(a pipeline is not made for concurrent use); different models run side by side. Tiles of any
size are padded up to the nearest size the model accepts (its ``min + n*step`` axis sizes),
larger ones are predicted block by block, and the output is cropped back to the tile.

Models with several inputs or outputs run through :meth:`LocalBackend.predict_tensors` (every
tensor by id, in the model's own layout); :meth:`LocalBackend.predict` feeds one tile to a
model's first input and answers its first output.
"""

from __future__ import annotations

import tempfile
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import boto3
import numpy as np
import numpy.typing as npt
import yaml
from bioimageio.core import (
    Sample,
    Tensor,
    create_prediction_pipeline,
    load_model_description,
)
from botocore.exceptions import BotoCoreError, ClientError

from models.bioimageio.axes import (
    NAMED_LAYOUT,
    Axis,
    AxisError,
    axes_from_rdf,
    layout_names,
    rearrange,
    to_model_layout,
)
from models.bioimageio.errors import BackendError, UnknownModelError, WeightsUnavailableError

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

# Blocks of min + 64*step pixels per side for tiles larger than one block (bioimageio.core's
# "blocksize parameter"): about 1000 px for common models, so the usual tiles (up to 1024 px)
# go through the model in one call, which is 4 to 5 times faster than 4 blocks of 272 px.
BLOCKSIZE_PARAMETER = 64


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model package loaded into a prediction pipeline, with its RDF and tensor axes."""

    description: Any
    pipeline: Any
    rdf: dict[str, Any]
    input_id: Any  # the description's tensor id (0.5) or name (0.4)
    input_axes: list[Axis]
    output_axes: list[Axis]
    inputs: dict[str, list[Axis]]  # every input tensor's axes, by id, in the model's order
    outputs: dict[str, list[Axis]]


class LocalBackend:
    """Runs bioimage.io model packages with bioimageio.core."""

    def __init__(
        self, packages: Mapping[str, str], weights_format: WeightsFormat | None = None
    ) -> None:
        """Serve ``packages`` (model id -> package path) with ``weights_format`` weights
        (None: the first format the package and this machine support)."""
        self._packages = dict(packages)
        self._weights_format = weights_format
        self._loaded: dict[tuple[str, WeightsFormat | None], LoadedModel] = {}
        self._sources: dict[str, str] = {}
        self._locks = {model_id: threading.Lock() for model_id in self._packages}

    @property
    def weights_format(self) -> WeightsFormat | None:
        """The weights format models are loaded with (None: each package's first usable)."""
        return self._weights_format

    @property
    def model_ids(self) -> list[str]:
        """The ids of the models this backend serves."""
        return sorted(self._packages)

    def source(self, model_id: str) -> str:
        """The local path of a model's package (downloaded first when it is in S3).

        Raises:
            UnknownModelError: If there is no such model.
            BackendError: If an S3 package cannot be downloaded.
        """
        self._check(model_id)
        with self._locks[model_id]:
            return self._source(model_id)

    def _source(self, model_id: str) -> str:
        source = self._sources.get(model_id)
        if source is None:
            source = self._packages[model_id]
            if source.startswith("s3://"):
                directory = Path(tempfile.mkdtemp(prefix=f"bioimageio-{model_id}-"))
                source = fetch_package(source, directory)
            self._sources[model_id] = source
        return source

    def load(self, model_id: str, weights_format: WeightsFormat | None = None) -> LoadedModel:
        """A model with ``weights_format`` weights (None: the backend's), loaded on first use.

        Raises:
            UnknownModelError: If there is no such model.
            BackendError: If its package cannot be loaded.
        """
        self._check(model_id)
        with self._locks[model_id]:
            return self._load(model_id, weights_format or self._weights_format)

    def forget(self, model_id: str) -> None:
        """Drop a loaded model and its downloaded package: the next call loads it afresh."""
        self._check(model_id)
        with self._locks[model_id]:
            self._sources.pop(model_id, None)
            for key in [key for key in self._loaded if key[0] == model_id]:
                del self._loaded[key]

    def _check(self, model_id: str) -> None:
        if model_id not in self._packages:
            raise UnknownModelError(f"known models: {', '.join(self.model_ids)}")

    def _load(self, model_id: str, weights_format: WeightsFormat | None) -> LoadedModel:
        loaded = self._loaded.get((model_id, weights_format))
        if loaded is not None:
            return loaded
        source = self._source(model_id)
        try:
            # IO checks hash and fetch every referenced file; local packages need neither.
            description = load_model_description(source, perform_io_checks=False)
        except MODEL_ERRORS as err:
            raise BackendError(f"cannot load model package {source}: {err}") from err
        _check_weights(description, weights_format)
        try:
            pipeline = create_prediction_pipeline(description, weight_format=weights_format)
            rdf = description.model_dump(mode="json", exclude_unset=True)
            inputs = {_tensor_id(t): axes_from_rdf(t) for t in rdf["inputs"]}
            outputs = {_tensor_id(t): axes_from_rdf(t) for t in rdf["outputs"]}
            loaded = LoadedModel(
                description=description,
                pipeline=pipeline,
                rdf=rdf,
                input_id=getattr(description.inputs[0], "id", None)
                or getattr(description.inputs[0], "name", "input"),
                input_axes=next(iter(inputs.values())),
                output_axes=next(iter(outputs.values())),
                inputs=inputs,
                outputs=outputs,
            )
        except MODEL_ERRORS as err:
            raise BackendError(f"cannot load model package {source}: {err}") from err
        self._loaded[(model_id, weights_format)] = loaded
        return loaded

    def published_rdf(self, model_id: str) -> dict[str, Any]:
        """The package's ``rdf.yaml`` as written (no upgrade, no normalisation), with ``id``.

        Raises:
            UnknownModelError: If there is no such model.
            BackendError: If the package has no readable ``rdf.yaml``.
        """
        try:
            rdf = read_rdf_yaml(Path(self.source(model_id)))
        except (OSError, KeyError, yaml.YAMLError, zipfile.BadZipFile) as err:
            raise BackendError(f"cannot read the rdf.yaml of {model_id}: {err}") from err
        return {"id": model_id, **rdf} if "id" not in rdf else rdf

    def predict_tensors(
        self,
        model_id: str,
        arrays: Mapping[str, npt.NDArray[Any]],
        blocksize: int | None = None,
        weights_format: WeightsFormat | None = None,
    ) -> dict[str, npt.NDArray[Any]]:
        """Run the model on every input tensor (by id, in the model's layout); every output.

        Spatial axes are padded up to sizes the model takes and the outputs cropped back.

        Raises:
            UnknownModelError: If there is no such model.
            BackendError: If the model cannot run on these inputs.
        """
        self._check(model_id)
        with self._locks[model_id]:
            loaded = self._load(model_id, weights_format or self._weights_format)
            return _predict_tensors(loaded, arrays, blocksize or BLOCKSIZE_PARAMETER)

    def metadata(self, model_id: str) -> dict[str, Any]:
        """The model's id, name and weights format."""
        loaded = self.load(model_id)
        return {
            "modelId": model_id,
            "modelName": str(loaded.description.name),
            "weightsFormat": self._weights_format or "default",
        }

    def predict(
        self,
        model_id: str,
        tile: npt.NDArray[Any],
        blocksize: int | None = None,
        weights_format: WeightsFormat | None = None,
    ) -> npt.NDArray[np.float32]:
        """Run the model on a ``(bands, rows, cols)`` tile; ``(channels, rows, cols)`` out.

        Tiles larger than one block of ``min + blocksize * step`` pixels (default
        ``BLOCKSIZE_PARAMETER``) go block by block.
        """
        self._check(model_id)
        with self._locks[model_id]:
            loaded = self._load(model_id, weights_format or self._weights_format)
            return self._predict(loaded, tile, blocksize or BLOCKSIZE_PARAMETER)

    def _predict(
        self, loaded: LoadedModel, tile: npt.NDArray[Any], blocksize: int
    ) -> npt.NDArray[np.float32]:
        rows, cols = (int(n) for n in tile.shape[1:])
        try:
            array = to_model_layout(tile, loaded.input_axes)
        except AxisError as err:
            raise BackendError(str(err)) from err
        dims = tuple(axis.id for axis in loaded.input_axes)
        too_big = any(
            axis.step and size > axis.minimum + blocksize * axis.step
            for axis, size in zip(loaded.input_axes, array.shape, strict=True)
        )
        try:
            # The pipeline itself, not bioimageio.core.predict: predict() unloads the pipeline
            # when it returns, which leaves torchscript/pytorch adapters unusable next time.
            tensor = Tensor.from_numpy(array, dims=dims)
            sample = Sample(members={loaded.input_id: tensor}, stat={}, id="tile")
            if too_big:
                sample = loaded.pipeline.predict_sample_with_blocking(sample, ns=blocksize)
            else:
                sample = loaded.pipeline.predict_sample_without_blocking(sample)
        except MODEL_ERRORS as err:
            raise BackendError(f"prediction failed: {err}") from err
        output = next(iter(sample.members.values()))
        try:
            axes = loaded.output_axes
            names = dict(zip([axis.id for axis in axes], layout_names(axes), strict=True))
            dims = tuple(names.get(str(dim), str(dim)) for dim in output.dims)
            planes = rearrange(output.data.to_numpy(), dims, NAMED_LAYOUT)[0]
        except AxisError as err:
            raise BackendError(f"model output: {err}") from err
        return np.ascontiguousarray(planes[:, :rows, :cols], dtype=np.float32)


def _tensor_id(tensor: Mapping[str, Any]) -> str:
    return str(tensor.get("id") or tensor.get("name"))


def _check_weights(description: Any, weights_format: WeightsFormat | None) -> None:
    """Raise WeightsUnavailableError when the package lacks ``weights_format``."""
    if weights_format is None:
        return
    weights = description.weights
    available = [f for f in WEIGHTS_FORMATS if getattr(weights, f, None) is not None]
    if weights_format not in available:
        raise WeightsUnavailableError(
            f"weights_format: the package has no {weights_format!r} weights;"
            f" it has {', '.join(available) or 'none'}"
        )


def _predict_tensors(
    loaded: LoadedModel, arrays: Mapping[str, npt.NDArray[Any]], blocksize: int
) -> dict[str, npt.NDArray[Any]]:
    members = {}
    original: dict[str, int] = {}  # spatial axis id -> size before padding
    too_big = False
    for tensor_id, axes in loaded.inputs.items():
        array = np.asarray(arrays[tensor_id], dtype=np.float32)
        pad = []
        for axis, size in zip(axes, array.shape, strict=True):
            target = axis.valid_size(size) if axis.kind == "space" else size
            if axis.kind == "space":
                original[axis.id] = size
                too_big |= bool(axis.step) and size > axis.minimum + blocksize * axis.step
            pad.append((0, target - size))
        if any(after for _, after in pad):
            array = np.pad(array, pad)
        dims = tuple(axis.id for axis in axes)
        members[_member_id(loaded, tensor_id)] = Tensor.from_numpy(array, dims=dims)
    try:
        sample = Sample(members=members, stat={}, id="sample")
        if too_big:
            sample = loaded.pipeline.predict_sample_with_blocking(sample, ns=blocksize)
        else:
            sample = loaded.pipeline.predict_sample_without_blocking(sample)
    except MODEL_ERRORS as err:
        raise BackendError(f"prediction failed: {err}") from err
    results = {}
    for member_id, tensor in sample.members.items():
        data = tensor.data.to_numpy()
        crop = tuple(
            slice(0, original.get(str(dim), size))
            for dim, size in zip(tensor.dims, data.shape, strict=True)
        )
        results[str(member_id)] = np.ascontiguousarray(data[crop])
    return results


def _member_id(loaded: LoadedModel, tensor_id: str) -> Any:
    """The description's own id object for ``tensor_id`` (a sample is keyed by it)."""
    for tensor in loaded.description.inputs:
        if str(getattr(tensor, "id", None) or getattr(tensor, "name", "")) == tensor_id:
            return getattr(tensor, "id", None) or tensor.name
    raise BackendError(f"the model has no input {tensor_id!r}")


def read_rdf_yaml(source: Path) -> dict[str, Any]:
    """The raw content of a package's ``rdf.yaml`` (a folder, the yaml itself, or a zip).

    Raises:
        OSError, KeyError, yaml.YAMLError, zipfile.BadZipFile: If it cannot be read.
    """
    if source.is_dir():
        source = source / "rdf.yaml"
    if source.suffix == ".zip":
        with zipfile.ZipFile(source) as archive:
            name = next(
                (n for n in archive.namelist() if n.endswith(("rdf.yaml", "bioimageio.yaml"))),
                "rdf.yaml",
            )
            text = archive.read(name).decode()
    else:
        text = source.read_text()
    content = yaml.safe_load(text)
    if not isinstance(content, dict):
        raise KeyError(f"{source} is not a YAML mapping")
    return content


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
