"""A model server shaped like the reference implementation's own centerpoint test model.

Written on Python's ``http.server`` (HTTP/1.0, one thread per connection), the way a model
developer's first server looks, and answering as the reference's model developer guide and
its centerpoint container do: one feature per tile, a box of +-10 % of the tile around its
centre in ``imageBBox``, a random 32-hex ``id`` and ``image_id``, ``modelMetadata``, and with
segmentation a hexagon outline in ``imageGeometry`` (a regular 6-gon on the unit circle,
first vertex at the top, closed and with the first vertex repeated once more, moved to
[0, 1] and scaled to 10 % of the tile with its lower left corner at the tile centre,
coordinates rounded to 4 decimals); without segmentation ``imageGeometry`` is the point
[0, 0]. The CustomAttributes header changes the reply for the tests:

* ``segmentation=false``: the point instead of the hexagon;
* ``ids=none``: no feature ``id``;
* ``legacy=true``: the older property names (``bounds_imcoords``, ``geom_imcoords``,
  ``feature_types``, ``detection_score``) instead of the current ones.

Every ``id`` sent is appended to the file given by ``--ids-file``, so a test can check that
the output kept them. ``python -m tests.functional.reference_model --port P --ids-file F``.
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rasterio.io import MemoryFile

HEXAGON_VERTICES = 6
BOX_FRACTION = 0.1


def hexagon(width: int, height: int) -> list[list[float]]:
    """The reference centerpoint model's segmentation outline for a tile of this size."""
    unit = [
        (
            math.cos(math.pi / 2 + 2 * math.pi * k / HEXAGON_VERTICES),
            math.sin(math.pi / 2 + 2 * math.pi * k / HEXAGON_VERTICES),
        )
        for k in range(HEXAGON_VERTICES + 1)
    ]
    unit.append(unit[0])
    scale_x, scale_y = BOX_FRACTION * width, BOX_FRACTION * height
    return [
        [
            round((x + 1) / 2 * scale_x + width / 2, 4),
            round((y + 1) / 2 * scale_y + height / 2, 4),
        ]
        for x, y in unit
    ]


def centre_box(width: int, height: int) -> list[float]:
    """The detection box: the tile centre +-10 % of the tile."""
    cx, cy, dx, dy = width / 2, height / 2, width * BOX_FRACTION, height * BOX_FRACTION
    return [cx - dx, cy - dy, cx + dx, cy + dy]


def feature(width: int, height: int, options: dict[str, str]) -> dict[str, Any]:
    """One reply feature for a tile of ``width`` x ``height`` pixels."""
    box = centre_box(width, height)
    outline: dict[str, Any] = {"type": "Point", "coordinates": [0.0, 0.0]}
    if options.get("segmentation", "true") == "true":
        outline = {"type": "Polygon", "coordinates": [hexagon(width, height)]}
    properties: dict[str, Any]
    if options.get("legacy") == "true":
        ring = [[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]]
        properties = {
            "bounds_imcoords": box,
            "geom_imcoords": ring,
            "feature_types": {"sample_object": 1.0},
            "detection_score": 1.0,
        }
    else:
        properties = {
            "imageGeometry": outline,
            "imageBBox": box,
            "featureClasses": [{"iri": "sample_object", "score": 1.0}],
        }
    properties["modelMetadata"] = {
        "modelName": "centerpoint",
        "ontologyName": "centerpoint",
        "ontologyVersion": "1.0.0",
    }
    properties["image_id"] = secrets.token_hex(16)
    result: dict[str, Any] = {"type": "Feature", "geometry": None, "properties": properties}
    if options.get("ids") != "none":
        result["id"] = secrets.token_hex(16)
    return result


class Handler(BaseHTTPRequestHandler):
    """``GET /ping`` and ``POST /invocations``."""

    ids_file: Path | None = None
    lock = threading.Lock()

    def do_GET(self) -> None:
        """Health check."""
        self._reply(200 if self.path == "/ping" else 404, b"\n")

    def do_POST(self) -> None:
        """Answer one tile."""
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        header = self.headers.get("X-Amzn-SageMaker-Custom-Attributes", "")
        options = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
        try:
            with MemoryFile(body) as memory, memory.open() as dataset:
                width, height = dataset.width, dataset.height
        except Exception:  # noqa: BLE001 - any unreadable tile is the client's error
            self._reply(400, b"Unable to parse image from request!")
            return
        reply = feature(width, height, options)
        if "id" in reply and self.ids_file is not None:
            with self.lock, self.ids_file.open("a") as ids:
                ids.write(reply["id"] + "\n")
        self._reply(200, json.dumps({"type": "FeatureCollection", "features": [reply]}).encode())

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the worker logs every call it makes."""


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ids-file", type=Path)
    args = parser.parse_args()
    Handler.ids_file = args.ids_file
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
