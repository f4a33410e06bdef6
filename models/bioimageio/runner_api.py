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
for bad input; nothing here is specific to HTTP otherwise.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
from packaging.requirements import InvalidRequirement, Requirement
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.bioimageio.errors import (
    ApiError,
    BackendError,
    UnknownModelError,
    WeightsUnavailableError,
)
from models.bioimageio.fetch import UrlPolicy, fetch_url
from models.bioimageio.inputs import decode_file, file_type, fit_input
from models.bioimageio.local import MODEL_ERRORS, LoadedModel, LocalBackend, WeightsFormat
from models.bioimageio.uploads import UPLOAD_TTL_S, UploadStore

log = logging.getLogger(__name__)

__all__ = ["ModelRunnerApi", "UploadStore"]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SearchParams(_Params):
    """``search_models`` parameters."""

    keywords: list[str] | None = None
    limit: int = Field(10, ge=1, le=100)
    ignore_checks: bool = False

    @field_validator("keywords", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """HTTP callers give keywords comma-separated in one string."""
        return _comma_list(value)


class RdfParams(_Params):
    """``get_model_rdf`` parameters."""

    model_id: str
    stage: bool = False


class UploadParams(_Params):
    """``get_upload_url`` parameters."""

    file_type: str


class InferParams(_Params):
    """``infer`` parameters; ``inputs`` is an array (RPC), a file path, a URL, or a dict."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    model_id: str
    inputs: np.ndarray | str | dict[str, np.ndarray | str]
    return_download_url: bool = False
    weights_format: WeightsFormat | None = None
    device: Literal["cpu", "cuda"] | None = None
    default_blocksize_parameter: int | None = Field(None, ge=1, le=1024)
    sample_id: str = "sample"
    skip_cache: bool = False


class StatusParams(_Params):
    """``get_infer_status`` parameters."""

    request_id: str


class TestParams(_Params):
    """``test`` parameters."""

    model_id: str
    stage: bool = False
    additional_requirements: list[str] | None = None
    skip_cache: bool = False

    @field_validator("additional_requirements", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """HTTP callers give requirements comma-separated in one string."""
        return _comma_list(value)


class ValidateParams(_Params):
    """``validate`` parameters."""

    rdf_dict: dict[str, Any]
    known_files: dict[str, str | None] | None = None


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def parse_params(model: type[_Params], values: Mapping[str, Any]) -> Any:
    """``values`` checked against a method's parameters.

    Raises:
        ApiError: 400 naming each bad parameter and why.
    """
    try:
        return model.model_validate(dict(values))
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'parameters'}: {e['msg']}"
            for e in err.errors()
        )
        raise ApiError(400, problems) from None


@dataclass(slots=True)
class InferJob:
    """One asynchronous ``infer`` request."""

    request_id: str
    submitted_at: float
    started_at: float | None = None
    completed_at: float | None = None
    result: dict[str, Any] | None = None


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
        self._jobs: dict[str, InferJob] = {}
        self._jobs_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="infer")
        self._checked: dict[str, bool] = {}
        self.methods: dict[str, tuple[type[_Params], Callable[[Any], Any]]] = {
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
        self._pool.shutdown(wait=False, cancel_futures=True)

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
        job = InferJob(request_id=str(uuid.uuid4()), submitted_at=time.time())
        with self._jobs_lock:
            self._prune()
            self._jobs[job.request_id] = job
        self._pool.submit(self._run_job, job, params, arrays)
        return job.request_id

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

    def _run_job(
        self, job: InferJob, params: InferParams, arrays: dict[str, npt.NDArray[Any]]
    ) -> None:
        job.started_at = time.time()
        try:
            job.result = self._run(params, arrays)
        except ApiError as err:
            job.result = {"error": err.message}
        except MODEL_ERRORS as err:
            job.result = {"error": f"model {params.model_id!r} failed: {err}"}
        job.completed_at = time.time()

    def _prune(self) -> None:
        """Forget finished jobs older than the upload lifetime (the caller holds the lock)."""
        horizon = time.time() - (self.store.ttl_s if self.store else UPLOAD_TTL_S)
        for request_id, job in list(self._jobs.items()):
            if job.completed_at is not None and job.completed_at < horizon:
                del self._jobs[request_id]

    def get_infer_status(self, params: StatusParams) -> dict[str, Any]:
        """Where an asynchronous request is: queue position, times and, when done, its result."""
        with self._jobs_lock:
            job = self._jobs.get(params.request_id)
            if job is None:
                raise ApiError(404, f"request_id: no request {params.request_id!r} (or it expired)")
            waiting = sorted(
                (j for j in self._jobs.values() if j.started_at is None),
                key=lambda j: j.submitted_at,
            )
        position = next((i + 1 for i, j in enumerate(waiting) if j is job), 0)
        return {
            "request_id": job.request_id,
            "submitted_at": job.submitted_at,
            "started_at": job.started_at,
            "completed_at": job.completed_at,
            "queue_position": position,
            "result": job.result,
        }

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
        missing = _missing_requirements(params.additional_requirements or [])
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
        from bioimageio.core import test_model  # noqa: PLC0415  (heavy; only this method)

        summary = test_model(source, weight_format=self.backend.weights_format)
        report: dict[str, Any] = summary.model_dump(mode="json")
        report.pop("source_name", None)  # a path on this server
        failed = [d for d in summary.details if d.status == "failed"]
        details = (
            f"All {len(summary.details)} checks passed."
            if not failed
            else "; ".join(f"{d.name}: {' '.join(e.msg for e in d.errors)}" for d in failed)
        )
        return {"status": str(summary.status), "details": details, "report": report}

    def validate(self, params: ValidateParams) -> dict[str, Any]:
        """Whether ``rdf_dict`` is a valid description, with the validation summary."""
        from bioimageio.spec import ValidationContext, validate_format  # noqa: PLC0415

        context = ValidationContext(
            perform_io_checks=False, known_files=cast(Any, dict(params.known_files or {}))
        )
        try:
            summary = validate_format(params.rdf_dict, context=context)
        except MODEL_ERRORS as err:
            return {"success": False, "details": f"cannot validate: {err}"}
        return {
            "success": summary.status in {"passed", "valid-format"},
            "details": summary.format(),
        }


def _missing_requirements(requirements: list[str]) -> list[str]:
    """The requirements this environment does not satisfy.

    Raises:
        ApiError: 400 for a requirement that is not a valid specifier.
    """
    missing = []
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as err:
            raise ApiError(400, f"additional_requirements: {text!r}: {err}") from None
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            missing.append(f"{text} (has {version})")
    return missing
