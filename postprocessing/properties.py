"""Values every output feature carries besides its geometry: its id when the model gave none,
``inferenceDT``, a NITF's ``sourceMetadata``. Pure functions; no I/O."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any


def stable_feature_id(image_id: str, geometry_wkb: bytes, classes_json: str) -> str:
    """An id for a feature the model gave none: the same for the same job, image and
    detection on every run (32 hex digits, like the ids of the reference's models)."""
    digest = hashlib.sha256(image_id.encode())
    digest.update(b"\0")
    digest.update(geometry_wkb)
    digest.update(classes_json.encode())
    return digest.hexdigest()[:32]


def inference_dt(when_s: float) -> str:
    """``inferenceDT``: UTC in whole seconds with ``Z``, as the reference writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when_s))


def nitf_source_metadata(tags: Mapping[str, str], location: str) -> dict[str, Any] | None:
    """``sourceMetadata`` of a NITF image from its header tags, or None for other images."""
    if "NITF_IDATIM" not in tags and "NITF_ICAT" not in tags:
        return None
    source_dt = None
    idatim = tags.get("NITF_IDATIM", "").strip()
    if idatim:
        try:
            source_dt = datetime.strptime(idatim, "%Y%m%d%H%M%S").strftime("%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            source_dt = None
    return {
        "format": "NITF",
        "category": tags.get("NITF_ICAT", "").strip() or None,
        "sourceId": tags.get("NITF_FTITLE", "").strip() or None,
        "sourceDT": source_dt,
        "location": location,
    }
