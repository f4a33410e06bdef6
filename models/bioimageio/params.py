"""The parameters of the model-runner methods, checked before a method runs.

One frozen pydantic model per method (``search_models``, ``get_model_rdf``, ``get_upload_url``,
``infer``, ``get_infer_status``, ``test``, ``validate``); unknown parameters are refused, and
list parameters may come comma-separated in one string (as HTTP callers give them).
:func:`parse_params` turns a validation failure into a 400 :class:`ApiError` that names each bad
parameter. Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.bioimageio.errors import ApiError
from models.bioimageio.packages import WeightsFormat


class MethodParams(BaseModel):
    """The parameters of one model-runner method (frozen, no unknown fields)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SearchParams(MethodParams):
    """``search_models`` parameters."""

    keywords: list[str] | None = None
    limit: int = Field(10, ge=1, le=100)
    ignore_checks: bool = False

    @field_validator("keywords", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """HTTP callers give keywords comma-separated in one string."""
        return _comma_list(value)


class RdfParams(MethodParams):
    """``get_model_rdf`` parameters."""

    model_id: str
    stage: bool = False


class UploadParams(MethodParams):
    """``get_upload_url`` parameters."""

    file_type: str


class InferParams(MethodParams):
    """``infer`` parameters; ``inputs`` is an array (RPC), a file path, a URL, or a dict."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    model_id: str
    inputs: np.ndarray | str | dict[str, np.ndarray | str]
    return_download_url: bool = False
    weights_format: WeightsFormat | None = None
    device: Literal["cpu", "cuda"] | None = None
    default_blocksize_parameter: int | None = Field(None, ge=1, le=1024)
    sample_id: str = "sample"
    skip_cache: bool = False


class StatusParams(MethodParams):
    """``get_infer_status`` parameters."""

    request_id: str


class TestParams(MethodParams):
    """``test`` parameters."""

    model_id: str
    stage: bool = False
    additional_requirements: list[str] | None = None
    skip_cache: bool = False

    @field_validator("additional_requirements", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """HTTP callers give requirements comma-separated in one string."""
        return _comma_list(value)


class ValidateParams(MethodParams):
    """``validate`` parameters."""

    rdf_dict: dict[str, Any]
    known_files: dict[str, str | None] | None = None


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def parse_params(model: type[MethodParams], values: Mapping[str, Any]) -> Any:
    """``values`` checked against a method's parameters.

    Raises:
        ApiError: 400 naming each bad parameter and why.
    """
    try:
        return model.model_validate(dict(values))
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'parameters'}: {e['msg']}"
            for e in err.errors()
        )
        raise ApiError(400, problems) from None
