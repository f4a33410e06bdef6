"""``python -m models.bioimageio``: the bioimage.io runner adapter.

With ``--package`` the models run here (local backend); with ``--remote`` they run on a
BioImage.IO Model Runner service. ``--api-bucket`` also serves the model-runner API for the
local packages, with uploads and results as temporary objects in that S3 bucket.

Tokens come from the environment, never the command line (which other users can read):
``MODELRUNNER_BIOIMAGEIO_REMOTE_TOKEN`` is sent to the remote service,
``MODELRUNNER_BIOIMAGEIO_API_TOKEN`` is required from callers of this server's API.
"""

from __future__ import annotations

import argparse
import logging
import os

# Before bioimageio/onnxruntime are imported: no telemetry, no progress bars in the logs.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from models.bioimageio.adapter import API_PREFIX, AdapterServer
from models.bioimageio.invocation import Backend
from models.bioimageio.local import LocalBackend
from models.bioimageio.packages import WEIGHTS_FORMATS
from models.bioimageio.remote import RemoteBackend
from models.bioimageio.runner_api import ModelRunnerApi, UploadStore
from models.http import keep_freed_memory, serve_until_signalled

log = logging.getLogger("models.bioimageio")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--package",
        action="append",
        default=[],
        metavar="ID=PATH",
        help="a model id and its package (folder, rdf.yaml or .zip, local or s3://); repeatable",
    )
    parser.add_argument("--default", help="model id for requests that name none")
    parser.add_argument("--weights-format", choices=WEIGHTS_FORMATS, default=None)
    parser.add_argument("--remote", metavar="URL", help="run models on this model-runner service")
    parser.add_argument("--remote-timeout", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--api-bucket", help="serve the model-runner API; uploads go here")
    parser.add_argument("--api-prefix", default=API_PREFIX, help="path of the API's methods")
    parser.add_argument("--upload-prefix", default="temp/", help="key prefix of uploads")
    parser.add_argument("--upload-ttl", type=float, default=3600.0, metavar="SECONDS")
    parser.add_argument(
        "--async-infer", action="store_true", help="infer answers a request id to poll"
    )
    args = parser.parse_args(argv)
    if bool(args.package) == bool(args.remote):
        parser.error("give either --package (local models) or --remote (a model-runner service)")
    if args.api_bucket and not args.package:
        parser.error("--api-bucket serves local packages: give --package")
    packages = {}
    for item in args.package:
        model_id, sep, path = item.partition("=")
        if not sep or not model_id or not path:
            parser.error(f"--package {item!r}: expected ID=PATH")
        packages[model_id] = path
    args.packages = packages
    return args


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM/SIGINT."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not keep_freed_memory():
        log.info("no glibc mallopt here: freed memory goes back to the system at once")
    backend: Backend
    api = None
    if args.remote:
        backend = RemoteBackend(
            args.remote,
            token=os.environ.get("MODELRUNNER_BIOIMAGEIO_REMOTE_TOKEN") or None,
            timeout_s=args.remote_timeout,
            weights_format=args.weights_format,
        )
        default = args.default or ""
    else:
        local = LocalBackend(args.packages, args.weights_format)
        backend, default = local, args.default or next(iter(args.packages))
        if args.api_bucket:
            store = UploadStore(args.api_bucket, args.upload_prefix, args.upload_ttl)
            api = ModelRunnerApi(local, store, asynchronous=args.async_infer)
    server = AdapterServer(
        (args.host, args.port),
        backend,
        default,
        api=api,
        api_prefix=args.api_prefix,
        token=os.environ.get("MODELRUNNER_BIOIMAGEIO_API_TOKEN") or None,
    )
    where = args.remote or ", ".join(args.packages)
    log.info("bioimage.io adapter on http://%s:%d: %s", args.host, args.port, where)
    if api is not None:
        log.info("model-runner API at http://%s:%d%s", args.host, args.port, args.api_prefix)
    serve_until_signalled(server)


main()
