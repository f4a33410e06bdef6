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
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

import boto3
import numpy as np
import numpy.typing as npt
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.bioimageio.adapter import ApiError, BackendError, UnknownModelError
from models.bioimageio.axes import (
    AxisError,
    channel_count,
    check_input,
    from_model_layout,
    into_layout,
)
from models.bioimageio.local import MODEL_ERRORS, LocalBackend, WeightsFormat
from models.bioimageio.wire import encode_array
from tiling.encode import decode_tile
from tiling.errors import TilingError

log = logging.getLogger(__name__)

UPLOAD_TYPES = (".npy", ".png", ".tiff", ".tif", ".jpeg", ".jpg")
UPLOAD_TTL_S = 3600.0
MAX_UPLOAD_BYTES = 512 * 1024 * 1024


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SearchParams(_Params):
    """``search_models`` parameters."""

    keywords: list[str] | None = None
    limit: int = Field(10, ge=1, le=100)
    ignore_checks: bool = False


class RdfParams(_Params):
    """``get_model_rdf`` parameters."""

    model_id: str
    stage: bool = False


class UploadParams(_Params):
    """``get_upload_url`` parameters."""

    file_type: str


class InferParams(_Params):
    """``infer`` parameters."""

    model_id: str
    inputs: str | dict[str, str]
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


class ValidateParams(_Params):
    """``validate`` parameters."""

    rdf_dict: dict[str, Any]
    known_files: dict[str, str | None] | None = None


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


class UploadStore:
    """Temporary files in one S3 prefix, written and read through presigned URLs.

    Keys are ``<prefix><uuid><type>``; nothing outside that pattern is ever read, so a caller
    cannot point ``infer`` at other objects in the bucket. A file older than ``ttl_s`` has
    expired (a bucket lifecycle rule should delete the prefix after a day).
    """

    def __init__(
        self, bucket: str, prefix: str = "temp/", ttl_s: float = UPLOAD_TTL_S, s3: Any = None
    ) -> None:
        """Keep files in ``s3://bucket/prefix`` for ``ttl_s`` seconds."""
        self.bucket = bucket
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._s3 = s3 or boto3.client("s3")
        types = "|".join(re.escape(t) for t in UPLOAD_TYPES)
        self._pattern = re.compile(rf"{re.escape(prefix)}[0-9a-f]{{32}}({types})")

    def new_upload(self, file_type: str) -> dict[str, str]:
        """A presigned PUT URL for a new file and the path to give ``infer``.

        Raises:
            ApiError: 400 for a file type the service does not take.
        """
        if file_type not in UPLOAD_TYPES:
            raise ApiError(400, f"file_type: {file_type!r} is not one of {', '.join(UPLOAD_TYPES)}")
        key = f"{self.prefix}{uuid.uuid4().hex}{file_type}"
        url = self._s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=int(self.ttl_s),
        )
        return {"upload_url": url, "file_path": key}

    def read(self, file_path: str) -> bytes:
        """The bytes of an uploaded file.

        Raises:
            ApiError: 400 for a path this service did not hand out, 404 when nothing was
                uploaded there, 410 when the upload has expired, 502 when S3 fails.
        """
        if not self._pattern.fullmatch(file_path):
            raise ApiError(
                400,
                f"inputs: {file_path!r} is not a file path from get_upload_url"
                f" ({self.prefix}<id><type>)",
            )
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=file_path)
            if head["ContentLength"] > MAX_UPLOAD_BYTES:
                raise ApiError(413, f"inputs: {file_path} is larger than {MAX_UPLOAD_BYTES} bytes")
            age = (datetime.now(UTC) - head["LastModified"]).total_seconds()
            if age > self.ttl_s:
                raise ApiError(
                    410,
                    f"inputs: the upload {file_path} expired {age - self.ttl_s:.0f} s ago (uploads"
                    f" are kept {self.ttl_s:.0f} s); upload it again with a new get_upload_url",
                )
            body: bytes = self._s3.get_object(Bucket=self.bucket, Key=file_path)["Body"].read()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                raise ApiError(
                    404,
                    f"inputs: nothing was uploaded to {file_path} (PUT the file to the"
                    " upload_url first)",
                ) from None
            raise ApiError(502, f"cannot read {file_path} from storage: {err}") from err
        except BotoCoreError as err:
            raise ApiError(502, f"cannot read {file_path} from storage: {err}") from err
        return body

    def publish(self, data: bytes, file_type: str = ".npy") -> str:
        """Store a result; a presigned GET URL for it, valid for ``ttl_s``.

        Raises:
            ApiError: 502 when S3 fails.
        """
        key = f"{self.prefix}{uuid.uuid4().hex}{file_type}"
        try:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        except (BotoCoreError, ClientError) as err:
            raise ApiError(502, f"cannot store the result: {err}") from err
        url: str = self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=int(self.ttl_s)
        )
        return url


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
    ) -> None:
        """Serve ``backend``'s models; uploads in ``store`` (None: no uploads, so no ``infer``).

        With ``asynchronous``, ``infer`` answers a request id and ``workers`` threads run them.
        """
        self.backend = backend
        self.store = store
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
        """The model's description as a JSON object."""
        if params.stage:
            raise ApiError(
                404, f"stage: a local collection keeps no staged version of {params.model_id!r}"
            )
        rdf: dict[str, Any] = self._model(params.model_id).rdf
        return rdf

    def get_upload_url(self, params: UploadParams) -> dict[str, str]:
        """A presigned PUT URL and the file path to pass to ``infer``."""
        if self.store is None:
            raise ApiError(501, "this server has no upload storage (start it with an S3 bucket)")
        return self.store.new_upload(params.file_type)

    def infer(self, params: InferParams) -> Any:
        """Run a model on an uploaded file: the outputs, or a request id when asynchronous."""
        if params.device == "cuda":
            raise ApiError(400, "device: 'cuda' is not available, this server runs on the CPU")
        if params.skip_cache:
            self._forget(params.model_id)
        loaded = self._model(params.model_id, params.weights_format)
        tile = self._read_input(params, loaded)
        if not self.asynchronous:
            return self._run(params, loaded, tile)
        job = InferJob(request_id=uuid.uuid4().hex, submitted_at=time.time())
        with self._jobs_lock:
            self._prune()
            self._jobs[job.request_id] = job
        self._pool.submit(self._run_job, job, params, loaded, tile)
        return job.request_id

    def _forget(self, model_id: str) -> None:
        try:
            self.backend.forget(model_id)
        except UnknownModelError as err:
            raise ApiError(404, f"model_id: no model {model_id!r} here ({err})") from None

    def _read_input(self, params: InferParams, loaded: Any) -> npt.NDArray[Any]:
        """The input as a checked ``(channels, rows, cols)`` tile."""
        inputs = params.inputs
        if isinstance(inputs, dict):
            if set(inputs) != {str(loaded.input_id)}:
                raise ApiError(
                    400,
                    f"inputs: the model has one input {str(loaded.input_id)!r},"
                    f" got {sorted(inputs)}",
                )
            inputs = next(iter(inputs.values()))
        if inputs.startswith(("http://", "https://", "s3://")):
            raise ApiError(
                400, "inputs: this server does not fetch URLs; upload the file with get_upload_url"
            )
        if self.store is None:
            raise ApiError(501, "this server has no upload storage (start it with an S3 bucket)")
        body = self.store.read(inputs)
        axes = loaded.input_axes
        try:
            if inputs.endswith(".npy"):
                array = np.load(io.BytesIO(body), allow_pickle=False)
            else:
                tile = decode_tile(body)
                if channel_count(axes) == 1 and tile.shape[0] > 1:
                    tile = tile.mean(axis=0, keepdims=True)
                array = into_layout(tile, axes)
        except (ValueError, OSError, TilingError) as err:
            raise ApiError(
                400, f"inputs: {inputs} is not a readable {inputs[inputs.rfind('.') :]} file: {err}"
            ) from None
        except AxisError as err:
            raise ApiError(400, str(err)) from None
        try:
            check_input(array, axes, str(loaded.input_id))
        except AxisError as err:
            raise ApiError(400, str(err)) from None
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(
            array.dtype, np.complexfloating
        ):
            raise ApiError(400, f"inputs: pixels of type {array.dtype} cannot be a model input")
        return from_model_layout(array, axes)

    def _run(self, params: InferParams, loaded: Any, tile: npt.NDArray[Any]) -> dict[str, Any]:
        try:
            planes = self.backend.predict(
                params.model_id, tile, params.default_blocksize_parameter, params.weights_format
            )
            output = into_layout(planes, loaded.output_axes)
        except (BackendError, AxisError) as err:
            raise ApiError(
                500, f"model {params.model_id!r} failed on {params.sample_id}: {err}"
            ) from err
        name = str(loaded.rdf["outputs"][0].get("id") or loaded.rdf["outputs"][0].get("name"))
        if not params.return_download_url:
            return {name: encode_array(output)}
        if self.store is None:
            raise ApiError(501, "this server has no upload storage (start it with an S3 bucket)")
        buffer = io.BytesIO()
        np.save(buffer, output, allow_pickle=False)
        return {name: self.store.publish(buffer.getvalue())}

    def _run_job(
        self, job: InferJob, params: InferParams, loaded: Any, tile: npt.NDArray[Any]
    ) -> None:
        job.started_at = time.time()
        try:
            job.result = self._run(params, loaded, tile)
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
        """The bioimage.io test suite's report for a model (``status`` passed or failed)."""
        if params.stage:
            raise ApiError(
                404, f"stage: a local collection keeps no staged version of {params.model_id!r}"
            )
        if params.additional_requirements:
            raise ApiError(400, "additional_requirements: this server installs nothing")
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
        return report

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
