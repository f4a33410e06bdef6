"""The BioImage.IO Model Runner API for a local model collection.

The same methods, parameters and replies as the public service (``search_models``,
``get_model_rdf``, ``get_upload_url``, ``infer``, ``get_infer_status``, ``test``,
``validate``), over the models of a :class:`~models.bioimageio.local.LocalBackend`. Uploads and
results are temporary S3 objects reached through presigned URLs that expire (1 h by default).

``infer`` answers the outputs directly, or, when the API runs asynchronously, a request id
to poll with ``get_infer_status`` (the public service's newer form). Without
``return_download_url`` each output array is answered inline as
``{"_rtype": "ndarray", "_rshape": [...], "_rdtype": "float32", "_rvalue": base64}``.

Every method raises :class:`ApiError` with an HTTP status and a message naming the parameter
for bad input; nothing here is specific to HTTP otherwise. The parameters are checked in
:mod:`~models.bioimageio.params`, asynchronous requests run in :mod:`~models.bioimageio.jobs`
and ``test``/``validate`` are :mod:`~models.bioimageio.conformance`'s.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from models.bioimageio.conformance import (
    missing_requirements,
    run_test_suite,
    validate_description,
)
from models.bioimageio.errors import (
    ApiError,
    BackendError,
    UnknownModelError,
    WeightsUnavailableError,
)
from models.bioimageio.fetch import UrlPolicy, fetch_url
from models.bioimageio.inputs import decode_file, file_type, fit_input
from models.bioimageio.jobs import InferJobs
from models.bioimageio.local import LocalBackend
from models.bioimageio.packages import MODEL_ERRORS, LoadedModel, WeightsFormat
from models.bioimageio.params import (
    InferParams,
    MethodParams,
    RdfParams,
    SearchParams,
    StatusParams,
    TestParams,
    UploadParams,
    ValidateParams,
    parse_params,
)
from models.bioimageio.uploads import UPLOAD_TTL_S, UploadStore

log = logging.getLogger(__name__)

__all__ = ["ModelRunnerApi", "UploadStore"]


class ModelRunnerApi:
    """The model-runner methods over a local collection."""

    def __init__(
        self,
        backend: LocalBackend,
        store: UploadStore | None,
        asynchronous: bool = False,
        workers: int = 1,
        url_policy: UrlPolicy | None = None,
    ) -> None:
        """Serve ``backend``'s models; uploads in ``store`` (None: no file paths).

        With ``asynchronous``, ``infer`` answers a request id and ``workers`` threads run them.
        URL inputs are fetched under ``url_policy`` (None: URL inputs are refused).
        """
        self.backend = backend
        self.store = store
        self.url_policy = url_policy
        self.asynchronous = asynchronous
        self._jobs = InferJobs(workers, store.ttl_s if store else UPLOAD_TTL_S)
        self._checked: dict[str, bool] = {}
        self.methods: dict[str, tuple[type[MethodParams], Callable[[Any], Any]]] = {
            "search_models": (SearchParams, self.search_models),
            "get_model_rdf": (RdfParams, self.get_model_rdf),
            "get_upload_url": (UploadParams, self.get_upload_url),
            "infer": (InferParams, self.infer),
            "get_infer_status": (StatusParams, self.get_infer_status),
            "test": (TestParams, self.test),
            "validate": (ValidateParams, self.validate),
        }

    def call(self, method: str, values: Mapping[str, Any]) -> Any:
        """Run ``method`` with raw parameter ``values``.

        Raises:
            ApiError: For an unknown method, bad parameters or a failure.
        """
        entry = self.methods.get(method)
        if entry is None:
            raise ApiError(404, f"no method {method!r}; methods: {', '.join(self.methods)}")
        model, function = entry
        return function(parse_params(model, values))

    def close(self) -> None:
        """Stop the asynchronous workers."""
        self._jobs.close()

    def _model(self, model_id: str, weights_format: WeightsFormat | None = None) -> Any:
        try:
            return self.backend.load(model_id, weights_format)
        except UnknownModelError as err:
            raise ApiError(404, f"model_id: no model {model_id!r} here ({err})") from None
        except WeightsUnavailableError as err:
            raise ApiError(400, f"model {model_id!r}: {err}") from None
        except BackendError as err:
            raise ApiError(500, f"model {model_id!r} cannot be loaded: {err}") from err

    def search_models(self, params: SearchParams) -> list[dict[str, str]]:
        """Models whose id, name, description or tags contain every keyword."""
        wanted = [k.strip().lower() for k in params.keywords or [] if k.strip()]
        found = []
        for model_id in self.backend.model_ids:
            if not params.ignore_checks and not self._passes_checks(model_id):
                continue
            try:
                rdf = self.backend.load(model_id).rdf
            except BackendError:
                rdf = {}
            text = " ".join(
                [model_id, str(rdf.get("name", "")), str(rdf.get("description", ""))]
                + [str(tag) for tag in rdf.get("tags", [])]
            ).lower()
            if all(keyword in text for keyword in wanted):
                found.append({"model_id": model_id, "description": str(rdf.get("description", ""))})
            if len(found) == params.limit:
                break
        return found

    def _passes_checks(self, model_id: str) -> bool:
        """Whether the package loads into a prediction pipeline (remembered)."""
        if model_id not in self._checked:
            try:
                self.backend.load(model_id)
                self._checked[model_id] = True
            except BackendError as err:
                log.warning("model %s fails its checks: %s", model_id, err)
                self._checked[model_id] = False
        return self._checked[model_id]

    def get_model_rdf(self, params: RdfParams) -> dict[str, Any]:
        """The model's RDF as published (its ``rdf.yaml``), with its ``id``.

        Values JSON cannot carry (``.inf``, ``.nan``) stay floats: RPC carries them; the
        JSON transports refuse such an RDF with a 422 that says where they are.
        """
        if params.stage:
            raise ApiError(
                404, f"stage: a local collection keeps no staged version of {params.model_id!r}"
            )
        try:
            return self.backend.published_rdf(params.model_id)
        except UnknownModelError as err:
            raise ApiError(404, f"model_id: no model {params.model_id!r} here ({err})") from None
        except BackendError as err:
            raise ApiError(500, str(err)) from err

    def get_upload_url(self, params: UploadParams) -> dict[str, str]:
        """A presigned PUT URL and the file path to pass to ``infer``."""
        if self.store is None:
            raise ApiError(501, "this server has no upload storage (start it with an S3 bucket)")
        return self.store.new_upload(params.file_type)

    def infer(self, params: InferParams) -> Any:
        """Run a model: every output by id (arrays, or download URLs), or a request id when
        asynchronous."""
        if params.device == "cuda":
            raise ApiError(400, "device: 'cuda' is not available, this server runs on the CPU")
        if params.skip_cache:
            self._forget(params.model_id)
        loaded = self._model(params.model_id, params.weights_format)
        arrays = self._read_inputs(params, loaded)
        if not self.asynchronous:
            return self._run(params, arrays)
        return self._jobs.submit(functools.partial(self._run_job, params, arrays))

    def _forget(self, model_id: str) -> None:
        try:
            self.backend.forget(model_id)
        except UnknownModelError as err:
            raise ApiError(404, f"model_id: no model {model_id!r} here ({err})") from None

    def _read_inputs(self, params: InferParams, loaded: LoadedModel) -> dict[str, npt.NDArray[Any]]:
        """Every input tensor, by id, in the model's layout and checked."""
        inputs = params.inputs
        names = list(loaded.inputs)
        if not isinstance(inputs, dict):
            if len(names) != 1:
                raise ApiError(
                    400,
                    f"inputs: the model has {len(names)} inputs ({', '.join(names)});"
                    " give a dict of them by id",
                )
            inputs = {names[0]: inputs}
        if set(inputs) != set(names):
            raise ApiError(
                400, f"inputs: the model's inputs are {sorted(names)}, got {sorted(inputs)}"
            )
        return {
            name: self._read_input(value, loaded.inputs[name], name)
            for name, value in inputs.items()
        }

    def _read_input(
        self, value: npt.NDArray[Any] | str, axes: list[Any], name: str
    ) -> npt.NDArray[Any]:
        if isinstance(value, np.ndarray):
            return fit_input(value, axes, name)
        kind = file_type(value)
        if value.startswith(("http://", "https://")) or "://" in value:
            if self.url_policy is None:
                raise ApiError(
                    400, "inputs: this server fetches no URLs; upload the file with get_upload_url"
                )
            data = fetch_url(value, self.url_policy)
            if not kind and data.startswith(b"\x93NUMPY"):
                kind = ".npy"
        elif self.store is None:
            raise ApiError(501, "this server has no upload storage (start it with an S3 bucket)")
        else:
            data = self.store.read(value)
        array = decode_file(data, kind, value)
        return fit_input(array, axes, name, kind)

    def _run(self, params: InferParams, arrays: dict[str, npt.NDArray[Any]]) -> dict[str, Any]:
        try:
            outputs = self.backend.predict_tensors(
                params.model_id, arrays, params.default_blocksize_parameter, params.weights_format
            )
        except WeightsUnavailableError as err:
            raise ApiError(400, f"model {params.model_id!r}: {err}") from None
        except BackendError as err:
            raise ApiError(
                500, f"model {params.model_id!r} failed on {params.sample_id}: {err}"
            ) from err
        if not params.return_download_url:
            return dict(outputs)
        if self.store is None:
            raise ApiError(501, "this server has no upload storage (start it with an S3 bucket)")
        urls = {}
        for name, output in outputs.items():
            buffer = io.BytesIO()
            np.save(buffer, output, allow_pickle=False)
            urls[name] = self.store.publish(buffer.getvalue())
        return urls

    def _run_job(self, params: InferParams, arrays: dict[str, npt.NDArray[Any]]) -> dict[str, Any]:
        """An asynchronous request's result: the outputs, or ``{"error": ...}``."""
        try:
            return self._run(params, arrays)
        except ApiError as err:
            return {"error": err.message}
        except MODEL_ERRORS as err:
            return {"error": f"model {params.model_id!r} failed: {err}"}

    def get_infer_status(self, params: StatusParams) -> dict[str, Any]:
        """Where an asynchronous request is: queue position, times and, when done, its result."""
        return self._jobs.status(params.request_id)

    def test(self, params: TestParams) -> dict[str, Any]:
        """The bioimage.io test suite on a model: ``status`` (passed or failed), ``details``
        (one line, what failed) and ``report`` (the whole summary).

        ``additional_requirements`` are checked, not installed: the test runs when this
        server's environment already satisfies them and is refused (400, naming the missing
        ones) otherwise.
        """
        if params.stage:
            raise ApiError(
                404, f"stage: a local collection keeps no staged version of {params.model_id!r}"
            )
        missing = missing_requirements(params.additional_requirements or [])
        if missing:
            raise ApiError(
                400,
                "additional_requirements: this server installs no packages; it tests models in"
                f" its own environment, which lacks {', '.join(missing)}",
            )
        if params.skip_cache:
            self._forget(params.model_id)
        try:
            source = self.backend.source(params.model_id)
        except UnknownModelError as err:
            raise ApiError(404, f"model_id: no model {params.model_id!r} here ({err})") from None
        except BackendError as err:
            raise ApiError(500, str(err)) from err
        return run_test_suite(source, self.backend.weights_format)

    def validate(self, params: ValidateParams) -> dict[str, Any]:
        """Whether ``rdf_dict`` is a valid description, with the validation summary."""
        return validate_description(params.rdf_dict, params.known_files)
