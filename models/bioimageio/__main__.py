"""``python -m models.bioimageio``: the bioimage.io runner adapter with the local backend."""

from __future__ import annotations

import argparse
import logging

from models.bioimageio.adapter import AdapterServer
from models.bioimageio.local import WEIGHTS_FORMATS, LocalBackend
from models.server import serve_until_signalled

log = logging.getLogger("models.bioimageio")


def main(argv: list[str] | None = None) -> None:
    """Serve the given model packages until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--package",
        action="append",
        required=True,
        metavar="ID=PATH",
        help="a model id and its package (folder, rdf.yaml or .zip); repeatable",
    )
    parser.add_argument("--default", help="model id for requests that name none")
    parser.add_argument("--weights-format", choices=WEIGHTS_FORMATS, default=None)
    args = parser.parse_args(argv)
    packages = {}
    for item in args.package:
        model_id, sep, path = item.partition("=")
        if not sep or not model_id or not path:
            parser.error(f"--package {item!r}: expected ID=PATH")
        packages[model_id] = path
    default = args.default or next(iter(packages))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = AdapterServer(
        (args.host, args.port), LocalBackend(packages, args.weights_format), default
    )
    log.info("bioimage.io adapter on http://%s:%d: %s", args.host, args.port, ", ".join(packages))
    serve_until_signalled(server)


main()
