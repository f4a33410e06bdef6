"""The local backend: bioimage.io model packages run in this process with bioimageio.core.

Each package (a folder with ``rdf.yaml``, the ``rdf.yaml`` itself, or a ``.zip``; on disk or
in S3 as ``s3://bucket/model.zip`` or ``s3://bucket/folder/``) is loaded once, on first use,
into a prediction pipeline for the chosen weights format. Calls to one model are serialised
(a pipeline is not made for concurrent use); different models run side by side. Tiles of any
size are padded up to the nearest size the model accepts (its ``min + n*step`` axis sizes),
larger ones are predicted block by block, and the output is cropped back to the tile.

Models with several inputs or outputs run through :meth:`LocalBackend.predict_tensors` (every
tensor by id, in the model's own layout); :meth:`LocalBackend.predict` feeds one tile to a
model's first input and answers its first output. Loading a package is
:mod:`~models.bioimageio.packages`', running one :mod:`~models.bioimageio.prediction`'s; this
module keeps the loaded models and serialises the calls to each.
"""

from __future__ import annotations

import tempfile
import threading
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from models.bioimageio.errors import BackendError, UnknownModelError
from models.bioimageio.packages import (
    LoadedModel,
    WeightsFormat,
    fetch_package,
    load_package,
    read_rdf_yaml,
)
from models.bioimageio.prediction import BLOCKSIZE_PARAMETER, predict_tensors, predict_tile


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
        loaded = load_package(self._source(model_id), weights_format)
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
            return predict_tensors(loaded, arrays, blocksize or BLOCKSIZE_PARAMETER)

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
            return predict_tile(loaded, tile, blocksize or BLOCKSIZE_PARAMETER)
