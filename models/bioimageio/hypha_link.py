"""Connections to a Hypha server with hypha-rpc, without websocket compression.

hypha-rpc's websockets negotiate permessage-deflate, and every frame is then compressed with
zlib on each hop: a 1 MiB float32 array (which does not compress) took about 0.5 s per round
trip on this machine, 30 to 60 ms without. hypha-rpc has no option for it, so its connection
class is given ``compression=None`` here, once, before connecting. Chunk sizes stay
hypha-rpc's defaults: a peer whose chunks are larger than the receiver's buffer is cut off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import hypha_rpc
from hypha_rpc import websocket_client
from hypha_rpc.utils.schema import schema_function as _schema_function

F = TypeVar("F", bound=Callable[..., Any])

_patched = False


def schema_function(function: F) -> F:
    """hypha-rpc's ``schema_function`` (a JSON schema from the signature), typed."""
    return cast(F, _schema_function(function))


def _without_compression() -> None:
    global _patched  # noqa: PLW0603  (one process-wide switch)
    if _patched:
        return
    connection = websocket_client.WebsocketRPCConnection
    plain = connection._ws_connect_kwargs

    def connect_kwargs(self: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = plain(self)
        kwargs["compression"] = None
        return kwargs

    connection._ws_connect_kwargs = connect_kwargs
    _patched = True


def _config(server_url: str, token: str | None, workspace: str | None, timeout_s: float) -> Any:
    config: dict[str, Any] = {"server_url": server_url, "method_timeout": timeout_s}
    if token:
        config["token"] = token
    if workspace:
        config["workspace"] = workspace
    return config


async def connect(
    server_url: str,
    token: str | None = None,
    workspace: str | None = None,
    timeout_s: float = 600.0,
) -> Any:
    """An asynchronous hypha-rpc connection.

    With a root token and a ``workspace`` that does not exist yet, the workspace is created
    and a token for it made first.
    """
    _without_compression()
    if token and workspace:
        root = await hypha_rpc.connect_to_server(_config(server_url, token, None, timeout_s))
        if root.config.workspace != workspace:
            await _ensure_workspace(root, workspace)
            token = await root.generate_token({"workspace": workspace, "expires_in": 10**8})
        await root.disconnect()
    return await hypha_rpc.connect_to_server(_config(server_url, token, workspace, timeout_s))


async def _ensure_workspace(root: Any, workspace: str) -> None:
    workspaces = await root.list_workspaces()
    if any(w.get("id") == workspace for w in workspaces):
        return
    await root.create_workspace(
        {"name": workspace, "description": "bioimage.io model runner", "persistent": True},
        overwrite=False,
    )


def connect_sync(server_url: str, token: str | None = None, timeout_s: float = 600.0) -> Any:
    """A synchronous hypha-rpc connection (its own event loop in a thread)."""
    _without_compression()
    from hypha_rpc.sync import connect_to_server  # noqa: PLC0415

    return connect_to_server(_config(server_url, token, None, timeout_s))
