"""The remote backend: bioimage.io models run by a BioImage.IO Model Runner service over HTTP.

Over Hypha RPC (the default when the service's URL is on a Hypha server,
``<server>/<workspace>/services/<id>``): ``infer`` with the tile as a numpy array, the outputs
back as arrays, no upload. Otherwise over HTTP, for each tile: ``get_upload_url`` -> PUT the
tile as ``.npy`` (in the model's layout, padded to a size the model takes) -> ``infer`` with
``return_download_url`` -> GET the output ``.npy``.
A service whose ``infer`` answers a request id (the asynchronous form) is polled with
``get_infer_status`` until the result is there. A model's RDF is fetched once, for its axes.

Connection failures, timeouts, 429 and 5xx replies are retried with full-jitter backoff; other
4xx replies are not. An upload the service reports expired (410) is uploaded again once.
Errors name the method, the model and the service's own message. The transports are
:mod:`~models.bioimageio.http_client`'s and :mod:`~models.bioimageio.rpc_client`'s; this module
decides which to use and runs a tile through the service.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from models.bioimageio.axes import (
    Axis,
    AxisError,
    axes_from_rdf,
    from_model_layout,
    to_model_layout,
)
from models.bioimageio.errors import BackendError, UploadExpiredError
from models.bioimageio.http_client import HttpClient, error_detail
from models.bioimageio.rpc_client import connect_service, infer_rpc
from models.bioimageio.wire import decode_array

log = logging.getLogger(__name__)


class RemoteBackend:
    """A client of the model-runner HTTP API that serves as an adapter backend."""

    def __init__(  # noqa: PLR0913  (each is a documented client setting)
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 3,
        weights_format: str | None = None,
        poll_interval_s: float = 0.5,
        infer_timeout_s: float = 600.0,
        backoff_s: float = 0.5,
        transport: Literal["auto", "rpc", "http"] = "auto",
    ) -> None:
        """Call the service at ``base_url`` (e.g. ``https://host/bioimage-io/services/
        model-runner``), with ``token`` as a bearer token when given.

        ``transport`` ``auto`` tries Hypha RPC first and falls back to HTTP.
        """
        self.base_url = base_url.rstrip("/")
        self.transport = transport
        self._token = token
        self._rpc: Any = None
        self._rpc_lock = threading.Lock()
        self._rpc_tried = False
        self.weights_format = weights_format
        self._client = HttpClient(
            self.base_url, token=token, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s
        )
        self._poll_interval_s = poll_interval_s
        self._infer_timeout_s = infer_timeout_s
        self._rdfs: dict[str, dict[str, Any]] = {}
        self._rdf_lock = threading.Lock()

    # -- Backend -------------------------------------------------------------------------

    def metadata(self, model_id: str) -> dict[str, Any]:
        """The model's id and name, the weights format asked for and the service."""
        rdf = self.rdf(model_id)
        return {
            "modelId": model_id,
            "modelName": str(rdf.get("name", model_id)),
            "weightsFormat": self.weights_format or "default",
            "runner": self.base_url,
            "transport": "http" if self._service() is None else "rpc",
        }

    def predict(self, model_id: str, tile: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Run the model on a ``(bands, rows, cols)`` tile; ``(channels, rows, cols)`` out.

        Raises:
            UnknownModelError: If the service has no such model.
            BackendError: If the service fails or answers something unusable.
        """
        rdf = self.rdf(model_id)
        inputs, outputs = _tensor_axes(rdf, "inputs"), _tensor_axes(rdf, "outputs")
        rows, cols = (int(n) for n in tile.shape[1:])
        try:
            array = to_model_layout(tile, inputs)
        except AxisError as err:
            raise BackendError(f"model {model_id}: {err}") from err
        service = self._service()
        if service is not None:
            output = self._infer_rpc(service, model_id, array)
        else:
            output = self._output(model_id, self._infer_uploaded(model_id, array))
        try:
            planes = from_model_layout(output, outputs)
        except AxisError as err:
            raise BackendError(f"model {model_id} output {output.shape}: {err}") from err
        return np.ascontiguousarray(planes[:, :rows, :cols])

    # -- Hypha RPC -----------------------------------------------------------------------

    def _service(self) -> Any:
        """The service over Hypha RPC, or None to use HTTP (decided once)."""
        if self.transport == "http":
            return None
        with self._rpc_lock:
            if not self._rpc_tried:
                self._rpc_tried = True
                self._rpc = connect_service(
                    self.base_url,
                    self._token,
                    self._infer_timeout_s,
                    required=self.transport == "rpc",
                )
        return self._rpc

    def _infer_rpc(self, service: Any, model_id: str, array: npt.NDArray[Any]) -> Any:
        reply = infer_rpc(service, self.base_url, model_id, array, self.weights_format)
        if isinstance(reply, str):
            reply = self._wait(model_id, reply)
        if not isinstance(reply, Mapping) or not reply:
            raise BackendError(f"infer for {model_id} answered {reply!r:.200}")
        return self._output(model_id, reply)

    # -- the service's methods -----------------------------------------------------------

    def rdf(self, model_id: str) -> dict[str, Any]:
        """The model's RDF (fetched once)."""
        with self._rdf_lock:
            rdf = self._rdfs.get(model_id)
        if rdf is None:
            rdf = self.call("GET", "get_model_rdf", {"model_id": model_id}, model_id=model_id)
            if not isinstance(rdf, dict):
                raise BackendError(f"get_model_rdf for {model_id} answered {type(rdf).__name__}")
            with self._rdf_lock:
                self._rdfs[model_id] = rdf
        return rdf

    def call(
        self,
        http_method: str,
        name: str,
        params: Mapping[str, Any],
        model_id: str | None = None,
    ) -> Any:
        """Call one API method (GET with query parameters, POST with a JSON body).

        Raises:
            UnknownModelError: On 404 for a call about ``model_id``.
            UploadExpiredError: On 410.
            BackendError: On any other failure, after the retries.
        """
        return self._client.call(http_method, name, params, model_id)

    def _infer_uploaded(self, model_id: str, array: npt.NDArray[Any]) -> dict[str, Any]:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        try:
            return self._infer(model_id, buffer.getvalue())
        except UploadExpiredError:
            log.warning("upload for %s expired before inference; uploading again", model_id)
            return self._infer(model_id, buffer.getvalue())

    def _infer(self, model_id: str, data: bytes) -> dict[str, Any]:
        """Upload ``data`` and run the model on it; the ``infer`` result."""
        upload = self.call("GET", "get_upload_url", {"file_type": ".npy"})
        if not isinstance(upload, dict) or not {"upload_url", "file_path"} <= upload.keys():
            raise BackendError(f"get_upload_url answered {upload!r:.200}")
        put = self._client.request(
            "PUT", str(upload["upload_url"]), "upload", auth=False, body=data
        )
        if put.status != 200:  # noqa: PLR2004
            raise BackendError(f"upload failed: HTTP {put.status}: {error_detail(put.data)}")
        params = {
            "model_id": model_id,
            "inputs": upload["file_path"],
            "return_download_url": True,
            "weights_format": self.weights_format,
        }
        reply = self.call(
            "POST",
            "infer",
            {k: v for k, v in params.items() if v is not None},
            model_id=model_id,
        )
        if isinstance(reply, str):
            reply = self._wait(model_id, reply)
        if not isinstance(reply, dict):
            raise BackendError(f"infer for {model_id} answered {reply!r:.200}")
        if "error" in reply:
            message = str(reply["error"])
            if "expired" in message:
                raise UploadExpiredError(f"infer for {model_id}: {message}")
            raise BackendError(f"infer for {model_id} failed: {message}")
        return reply

    def _wait(self, model_id: str, request_id: str) -> Any:
        """Poll ``get_infer_status`` until the request has its result."""
        deadline = time.monotonic() + self._infer_timeout_s
        while True:
            status = self.call("GET", "get_infer_status", {"request_id": request_id})
            if not isinstance(status, dict):
                raise BackendError(f"get_infer_status answered {status!r:.200}")
            if status.get("result") is not None:
                return status["result"]
            if time.monotonic() > deadline:
                raise BackendError(
                    f"infer for {model_id}: no result after {self._infer_timeout_s:.0f} s"
                    f" (request {request_id}, queue position {status.get('queue_position')})"
                )
            time.sleep(self._poll_interval_s)

    def _output(self, model_id: str, result: Mapping[str, Any]) -> npt.NDArray[Any]:
        """The first output array of an ``infer`` result (an array, a URL or an inline array)."""
        if not result:
            raise BackendError(f"infer for {model_id} answered no outputs")
        value = next(iter(result.values()))
        if isinstance(value, np.ndarray):
            return value
        if isinstance(value, Mapping):
            try:
                return decode_array(value)
            except (ValueError, KeyError, TypeError) as err:
                raise BackendError(
                    f"infer for {model_id}: unreadable inline output: {err}"
                ) from err
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise BackendError(f"infer for {model_id}: output is {value!r:.200}, not a URL")
        download = self._client.request("GET", value, "download", auth=False)
        if download.status != 200:  # noqa: PLR2004
            raise BackendError(
                f"downloading the output of {model_id} failed: HTTP {download.status}:"
                f" {error_detail(download.data)}"
            )
        try:
            array: npt.NDArray[Any] = np.load(io.BytesIO(download.data), allow_pickle=False)
        except (ValueError, OSError) as err:
            raise BackendError(f"the output of {model_id} is not a .npy file: {err}") from err
        return array


def _tensor_axes(rdf: Mapping[str, Any], which: str) -> list[Axis]:
    """The first tensor's axes (a tile goes to the first input; the first output is read)."""
    tensors = rdf.get(which)
    if not isinstance(tensors, list) or not tensors:
        raise BackendError(f"the model's RDF lists no {which}")
    if which == "inputs" and len(tensors) != 1:
        raise BackendError(f"the adapter feeds one tile; the model has {len(tensors)} inputs")
    try:
        return axes_from_rdf(tensors[0])
    except AxisError as err:
        raise BackendError(f"model {which}: {err}") from err
