"""Arrays inline in a JSON reply of the model-runner API.

An ``infer`` reply without ``return_download_url`` carries each output as
``{"_rtype": "ndarray", "_rshape": [...], "_rdtype": "float32", "_rvalue": base64}``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt


def encode_array(array: npt.NDArray[Any]) -> dict[str, Any]:
    """An array as the inline JSON form of an ``infer`` reply."""
    contiguous = np.ascontiguousarray(array)
    return {
        "_rtype": "ndarray",
        "_rshape": list(contiguous.shape),
        "_rdtype": str(contiguous.dtype),
        "_rvalue": base64.b64encode(contiguous.tobytes()).decode(),
    }


def decode_array(value: Mapping[str, Any]) -> npt.NDArray[Any]:
    """The array of an inline ``infer`` reply entry.

    Raises:
        ValueError: If it is not one.
    """
    if value.get("_rtype") != "ndarray":
        raise ValueError("not an inline ndarray")
    data = base64.b64decode(value["_rvalue"])
    return np.frombuffer(data, dtype=np.dtype(value["_rdtype"])).reshape(value["_rshape"])
