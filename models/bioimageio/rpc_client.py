"""The model-runner service over Hypha RPC: connecting to it and calling its ``infer``.

A service is reachable over RPC when its URL is on a Hypha server,
``<server>/<workspace>/services/<id>``. When RPC is required a failure to connect is an error;
otherwise it is logged and the caller uses HTTP.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import numpy.typing as npt
from hypha_rpc.rpc import RemoteException
from websockets.exceptions import WebSocketException

from models.bioimageio.errors import BackendError, UnknownModelError
from models.bioimageio.hypha_link import connect_sync

log = logging.getLogger(__name__)


def connect_service(base_url: str, token: str | None, timeout_s: float, required: bool) -> Any:
    """The service at ``base_url`` over Hypha RPC, or None (when not ``required``) to use HTTP.

    Raises:
        BackendError: When ``required`` and the service cannot be reached over RPC.
    """
    parts = urlsplit(base_url)
    segments = parts.path.strip("/").split("/")
    if len(segments) != 3 or segments[1] != "services":  # noqa: PLR2004
        if required:
            raise BackendError(f"{base_url} is not <server>/<workspace>/services/<id>")
        return None
    server_url = f"{parts.scheme}://{parts.netloc}"
    try:
        server = connect_sync(server_url, token=token, timeout_s=timeout_s)
        service = server.get_service(f"{segments[0]}/{segments[2]}")
    except (OSError, RuntimeError, KeyError, ValueError, WebSocketException) as err:
        if required:
            raise BackendError(f"cannot reach {base_url} over Hypha RPC: {err}") from err
        log.info("no Hypha RPC at %s (%s); using HTTP", server_url, err)
        return None
    log.info("model runner %s over Hypha RPC", base_url)
    return service


def infer_rpc(
    service: Any,
    base_url: str,
    model_id: str,
    array: npt.NDArray[Any],
    weights_format: str | None,
) -> Any:
    """What the service's ``infer`` answers for ``array``: outputs by id, or a request id.

    Raises:
        UnknownModelError: If the service has no such model.
        BackendError: If the call fails.
    """
    options = {"weights_format": weights_format} if weights_format else {}
    try:
        return service.infer(model_id=model_id, inputs=array, **options)
    except Exception as err:
        # hypha-rpc rejects a call with a bare Exception carrying the service's error text
        # (RemoteException for an encoded error, OSError/TimeoutError for the connection);
        # anything else is a bug and goes on up.
        if type(err) is not Exception and not isinstance(err, RemoteException | OSError):
            raise
        if "KeyError" in str(err) and "no model" in str(err):
            raise UnknownModelError(f"{base_url}: {err}") from err
        raise BackendError(f"infer for {model_id} over RPC failed: {err}") from err
