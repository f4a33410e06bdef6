"""bioimage.io model packages: found on disk or in S3, read, and loaded into a pipeline.

A package is a folder with ``rdf.yaml``, the ``rdf.yaml`` itself, or a ``.zip``; in S3 it is
``s3://bucket/model.zip`` or ``s3://bucket/folder/`` and is downloaded first. Loading a
package checks it has the weights asked for and creates bioimageio.core's prediction pipeline,
with every input and output tensor's axes. No caching and no locking: the backend does both.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import boto3
import yaml
from bioimageio.core import create_prediction_pipeline, load_model_description
from botocore.exceptions import BotoCoreError, ClientError

from models.bioimageio.axes import Axis, axes_from_rdf
from models.bioimageio.errors import BackendError, WeightsUnavailableError

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


def load_package(source: str, weights_format: WeightsFormat | None) -> LoadedModel:
    """The package at local path ``source`` in a pipeline for ``weights_format`` weights
    (None: the first format the package and this machine support).

    Raises:
        WeightsUnavailableError: If the package has no ``weights_format`` weights.
        BackendError: If the package cannot be loaded.
    """
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
        return LoadedModel(
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
