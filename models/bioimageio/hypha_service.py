"""The model runner as a Hypha service: ``model-runner``, reached over HTTP, RPC and MCP.

Each method of :class:`~models.bioimageio.runner_api.ModelRunnerApi` is registered with a
typed schema (``schema_function``), so MCP clients list real tools with documented
parameters, and Hypha serves it at ``<server>/<workspace>/services/model-runner/<method>``
(HTTP), as ``<workspace>/model-runner`` (RPC) and at ``<server>/<workspace>/mcp/model-runner``
(MCP). The methods run in worker threads; this module only adapts arguments and errors.

Hypha maps a service's exceptions to HTTP statuses by their type, so an
:class:`~models.bioimageio.errors.ApiError` is raised as ``KeyError`` (404), ``PermissionError``
(403), ``ValueError`` (other 4xx, the status in the message) or ``RuntimeError`` (5xx).

``python -m models.bioimageio.hypha_service --server-url URL --package ID=PATH ...`` joins
any Hypha server; the token (one for the workspace, or the server's root token, which also
creates the workspace) comes from ``MODELRUNNER_BIOIMAGEIO_HYPHA_TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from pydantic import Field

from models.bioimageio.errors import ApiError
from models.bioimageio.fetch import UrlPolicy
from models.bioimageio.hypha_link import connect, schema_function
from models.bioimageio.local import LocalBackend
from models.bioimageio.packages import WEIGHTS_FORMATS
from models.bioimageio.runner_api import ModelRunnerApi
from models.bioimageio.uploads import UploadStore

log = logging.getLogger(__name__)

SERVICE_ID = "model-runner"
WORKSPACE = "bioimage-io"
_NOT_FOUND = 404
_FORBIDDEN = {401, 403}
_SERVER_ERROR = 500


def as_hypha_error(err: ApiError) -> Exception:
    """The exception whose type makes Hypha answer the nearest HTTP status."""
    if err.status == _NOT_FOUND:
        return KeyError(err.message)
    if err.status in _FORBIDDEN:
        return PermissionError(err.message)
    if err.status < _SERVER_ERROR:
        return ValueError(f"{err.status}: {err.message}")
    return RuntimeError(f"{err.status}: {err.message}")


def service_definition(api: ModelRunnerApi, service_id: str = SERVICE_ID) -> dict[str, Any]:
    """The service's description and its schema functions, ready for ``register_service``."""

    async def call(method: str, values: dict[str, Any]) -> Any:
        try:
            return await asyncio.to_thread(api.call, method, values)
        except ApiError as err:
            raise as_hypha_error(err) from None

    @schema_function
    async def search_models(
        keywords: list[str] | None = Field(
            None, description="Keywords every model found must match, e.g. ['segmentation']"
        ),
        limit: int = Field(10, description="Largest number of models to return (1 to 100)"),
        ignore_checks: bool = Field(False, description="Also list models that fail to load here"),
    ) -> Any:
        """Search the runnable models of this collection: a list of {model_id, description}."""
        return await call(
            "search_models",
            {"keywords": keywords, "limit": limit, "ignore_checks": ignore_checks},
        )

    @schema_function
    async def get_model_rdf(
        model_id: str = Field(..., description="The model's id"),
        stage: bool = Field(False, description="The staged (draft) version"),
    ) -> Any:
        """The model's resource description (its rdf.yaml as published, with its id)."""
        return await call("get_model_rdf", {"model_id": model_id, "stage": stage})

    @schema_function
    async def get_upload_url(
        file_type: str = Field(
            ..., description="File type: .npy, .png, .tiff, .tif, .jpeg or .jpg"
        ),
    ) -> Any:
        """A presigned URL to PUT a file to, and the file_path to pass to infer."""
        return await call("get_upload_url", {"file_type": file_type})

    @schema_function
    async def infer(
        model_id: str = Field(..., description="The model's id"),
        inputs: Any = Field(
            ...,
            description="A numpy array (RPC only), a file_path from get_upload_url, an"
            " http(s) URL on this server's allowlist, or a dict of those by input id",
        ),
        return_download_url: bool = Field(
            False, description="Answer download URLs of .npy files instead of arrays"
        ),
        weights_format: str | None = Field(None, description="Weights format to run"),
        device: str | None = Field(None, description="'cpu' or 'cuda' (None: automatic)"),
        default_blocksize_parameter: int | None = Field(
            None, description="Block size parameter for blockwise prediction of large inputs"
        ),
        sample_id: str = Field("sample", description="A name for this sample in messages"),
        skip_cache: bool = Field(False, description="Reload the model package first"),
    ) -> Any:
        """Run a model; every output by id (arrays, or download URLs)."""
        return await call(
            "infer",
            {
                "model_id": model_id,
                "inputs": inputs,
                "return_download_url": return_download_url,
                "weights_format": weights_format,
                "device": device,
                "default_blocksize_parameter": default_blocksize_parameter,
                "sample_id": sample_id,
                "skip_cache": skip_cache,
            },
        )

    @schema_function
    async def get_infer_status(
        request_id: str = Field(..., description="The id an asynchronous infer answered"),
    ) -> Any:
        """Where an asynchronous infer request is, and its result when done."""
        return await call("get_infer_status", {"request_id": request_id})

    @schema_function
    async def test(
        model_id: str = Field(..., description="The model's id"),
        stage: bool = Field(False, description="The staged (draft) version"),
        additional_requirements: list[str] | None = Field(
            None,
            description="Packages the test needs; checked against this server's environment,"
            " never installed",
        ),
        skip_cache: bool = Field(False, description="Reload the model package first"),
    ) -> Any:
        """Run the bioimage.io test suite on a model: {status, details, report}."""
        return await call(
            "test",
            {
                "model_id": model_id,
                "stage": stage,
                "additional_requirements": additional_requirements,
                "skip_cache": skip_cache,
            },
        )

    @schema_function
    async def validate(
        rdf_dict: dict[str, Any] = Field(..., description="A resource description"),
        known_files: dict[str, str | None] | None = Field(
            None, description="File name -> sha256 of the files it names"
        ),
    ) -> Any:
        """Validate a resource description: {success, details}."""
        return await call("validate", {"rdf_dict": rdf_dict, "known_files": known_files})

    functions: list[Callable[..., Coroutine[Any, Any, Any]]] = [
        search_models,
        get_model_rdf,
        get_upload_url,
        infer,
        get_infer_status,
        test,
        validate,
    ]
    return {
        "id": service_id,
        "name": "BioImage.IO Model Runner",
        "description": "Run bioimage.io models of this collection: search, describe, test, infer.",
        "config": {"visibility": "public", "require_context": False},
        **{function.__name__: function for function in functions},
    }


async def register(
    api: ModelRunnerApi, server_url: str, token: str, workspace: str = WORKSPACE
) -> Any:
    """Join ``server_url`` and register the service in ``workspace``; the connection.

    With the server's root token the workspace is created when missing.
    """
    server = await connect(server_url, token=token, workspace=workspace)
    info = await server.register_service(service_definition(api))
    log.info("registered %s on %s", info["id"], server_url)
    return server


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server-url", required=True, help="the Hypha server to join")
    parser.add_argument("--workspace", default=WORKSPACE)
    parser.add_argument("--package", action="append", default=[], metavar="ID=PATH")
    parser.add_argument("--weights-format", choices=WEIGHTS_FORMATS, default=None)
    parser.add_argument("--upload-bucket", help="S3 bucket for uploads and results")
    parser.add_argument("--upload-prefix", default="temp/")
    parser.add_argument("--upload-ttl", type=float, default=3600.0, metavar="SECONDS")
    parser.add_argument("--url-hosts", default="", help="hosts URL inputs may come from (a,b)")
    parser.add_argument(
        "--allow-private-urls",
        action="store_true",
        help="let allowed hosts resolve to loopback/private addresses (local stacks only)",
    )
    parser.add_argument("--async-infer", action="store_true")
    args = parser.parse_args(argv)
    if not args.package:
        parser.error("give at least one --package ID=PATH")
    args.packages = dict(item.partition("=")[::2] for item in args.package)
    if not all(args.packages) or not all(args.packages.values()):
        parser.error("--package: expected ID=PATH")
    return args


async def serve(args: argparse.Namespace, token: str) -> None:
    """Register the service and keep it up until SIGTERM/SIGINT."""
    backend = LocalBackend(args.packages, args.weights_format)
    store = (
        UploadStore(args.upload_bucket, args.upload_prefix, args.upload_ttl)
        if args.upload_bucket
        else None
    )
    policy = (
        UrlPolicy.from_hosts(args.url_hosts, allow_private=args.allow_private_urls)
        if args.url_hosts
        else None
    )
    api = ModelRunnerApi(backend, store, asynchronous=args.async_infer, url_policy=policy)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await register(api, args.server_url, token, args.workspace)
    log.info("model-runner ready: %s", ", ".join(args.packages))
    await stop.wait()
    await server.disconnect()
    api.close()


def main(argv: list[str] | None = None) -> None:
    """Join the server and serve until signalled."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    token = os.environ.get("MODELRUNNER_BIOIMAGEIO_HYPHA_TOKEN", "")
    if not token:
        raise SystemExit("set MODELRUNNER_BIOIMAGEIO_HYPHA_TOKEN to a token for the workspace")
    asyncio.run(serve(args, token))


if __name__ == "__main__":
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
