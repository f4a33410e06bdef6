"""The errors of the bioimage.io adapter and model runner, under one root.

``BioimageioError`` is the root. ``ApiError`` is what a model-runner method answers a caller
(an HTTP status and a message naming the parameter); the transports (the hand-written HTTP
server, Hypha HTTP, RPC and MCP) turn it into their own error replies. ``BackendError`` and
its kin come from the backends that run models.
"""

from __future__ import annotations


class BioimageioError(Exception):
    """Root of the errors of ``models.bioimageio``."""


class ApiError(BioimageioError):
    """A request a model-runner method cannot serve: an HTTP status and a message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BackendError(BioimageioError, RuntimeError):
    """The backend failed to run the model (the message says why)."""


class UnknownModelError(BioimageioError, LookupError):
    """The backend has no model of that id."""


class WeightsUnavailableError(BackendError):
    """The model package has no weights in the format asked for."""


class UploadExpiredError(BackendError):
    """The service no longer has the uploaded input."""
