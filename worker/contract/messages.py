"""Wire messages: the ImageRequest of the OversightML ModelRunner API, frozen and validated.

Field names are snake_case in Python and camelCase on the wire. Documented defaults are applied
here, so the rest of the worker never guesses.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Annotated, Any, Literal

import shapely
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

log = logging.getLogger(__name__)

DEFAULT_TILE_SIZE_PX = 1024
DEFAULT_TILE_OVERLAP_PX = 50
DEFAULT_IOU_THRESHOLD = 0.75


class WireModel(BaseModel):
    """Base of wire messages: frozen, camelCase aliases, accepts both spellings."""

    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
    )


class TileFormat(StrEnum):
    """Encoding of the tiles sent to the model."""

    NITF = "NITF"
    JPEG = "JPEG"
    PNG = "PNG"
    GTIFF = "GTIFF"


class TileCompression(StrEnum):
    """Compression inside the tile format."""

    NONE = "NONE"
    JPEG = "JPEG"
    J2K = "J2K"
    LZW = "LZW"


class ProcessorType(StrEnum):
    """Kind of model endpoint."""

    SM_ENDPOINT = "SM_ENDPOINT"
    HTTP_ENDPOINT = "HTTP_ENDPOINT"


class AlgorithmType(StrEnum):
    """Duplicate removal algorithm; NONE (an extension of the API) switches it off."""

    NMS = "NMS"
    SOFT_NMS = "SOFT_NMS"
    NONE = "NONE"


# InvokeEndpoint parameters a request may pass (imageProcessorParameters).
ENDPOINT_PARAMETERS = (
    "ContentType",
    "Accept",
    "CustomAttributes",
    "TargetModel",
    "TargetVariant",
    "TargetContainerHostname",
    "InferenceId",
    "EnableExplanations",
    "InferenceComponentName",
    "SessionId",
)

# Pairs of tile format and compression that can be produced (README table).
VALID_ENCODINGS: dict[TileFormat, frozenset[TileCompression]] = {
    TileFormat.NITF: frozenset({TileCompression.NONE, TileCompression.JPEG, TileCompression.J2K}),
    TileFormat.GTIFF: frozenset({TileCompression.NONE, TileCompression.LZW, TileCompression.JPEG}),
    TileFormat.PNG: frozenset({TileCompression.NONE}),
    TileFormat.JPEG: frozenset({TileCompression.NONE, TileCompression.JPEG}),
}
# The same as ("FORMAT", "COMPRESSION") strings, in a stable order.
VALID_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (fmt.value, comp.value) for fmt, comps in VALID_ENCODINGS.items() for comp in sorted(comps)
)


class ImageProcessor(WireModel):
    """The model endpoint a request targets."""

    name: Annotated[str, Field(min_length=1)]
    type: ProcessorType = ProcessorType.SM_ENDPOINT  # the reference's default
    assumed_role: str | None = None


class S3Output(WireModel):
    """Write one FeatureCollection per image to ``s3://bucket/prefix``."""

    type: Literal["S3"]
    bucket: Annotated[str, Field(min_length=3)]
    prefix: str = ""
    role: str | None = None


class KinesisOutput(WireModel):
    """Put FeatureCollection records on a Kinesis stream."""

    type: Literal["Kinesis"]
    stream: Annotated[str, Field(min_length=1)]
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 1000
    assumed_role: str | None = None


Output = Annotated[S3Output | KinesisOutput, Field(discriminator="type")]


class Algorithm(WireModel):
    """Parameters of the duplicate removal step."""

    algorithm_type: AlgorithmType = AlgorithmType.NMS
    iou_threshold: Annotated[float, Field(gt=0, le=1)] = DEFAULT_IOU_THRESHOLD
    skip_box_threshold: Annotated[float, Field(ge=0, lt=1)] = 0.0001
    sigma: Annotated[float, Field(gt=0)] = 0.1


class PostProcessingStep(WireModel):
    """One post-processing step; FEATURE_DISTILLATION is the only one defined."""

    step: Literal["FEATURE_DISTILLATION"] = "FEATURE_DISTILLATION"
    algorithm: Algorithm = Algorithm()


class ImageRequest(WireModel):
    """A request to find features in one or more images."""

    job_id: Annotated[str, Field(min_length=1, max_length=256)]
    job_name: str | None = None
    image_urls: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    outputs: list[Output] = []
    output_bucket: str | None = None
    output_prefix: str | None = None
    image_processor: ImageProcessor
    image_processor_parameters: dict[str, str] = {}
    image_processor_tile_size: Annotated[int, Field(gt=0)] = DEFAULT_TILE_SIZE_PX
    image_processor_tile_overlap: Annotated[int, Field(ge=0)] = DEFAULT_TILE_OVERLAP_PX
    image_processor_tile_format: TileFormat = TileFormat.NITF
    image_processor_tile_compression: TileCompression = TileCompression.NONE
    image_read_role: str | None = None
    region_of_interest: str | None = None
    feature_properties: list[dict[str, Any]] = []
    post_processing: list[PostProcessingStep] = [PostProcessingStep()]
    _body: str = PrivateAttr(default="")

    @property
    def original_body(self) -> str:
        """The message body this request was parsed from (its JSON when built in code)."""
        return self._body or self.model_dump_json(by_alias=True)

    @field_validator("image_processor_parameters")
    @classmethod
    def _known_parameters(cls, value: dict[str, str]) -> dict[str, str]:
        """Only SageMaker InvokeEndpoint parameters are passed on."""
        unknown = sorted(set(value) - set(ENDPOINT_PARAMETERS))
        if unknown:
            allowed = ", ".join(ENDPOINT_PARAMETERS)
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; allowed: {allowed}")
        return value

    @field_validator("region_of_interest")
    @classmethod
    def _roi_is_polygonal_wkt(cls, value: str | None) -> str | None:
        """A Polygon or MultiPolygon in WKT (lon/lat)."""
        if value is None:
            return None
        try:
            geometry = shapely.from_wkt(value)
        except shapely.errors.ShapelyError as err:
            raise ValueError(f"not valid WKT: {err}") from err
        if geometry.geom_type not in {"Polygon", "MultiPolygon"} or geometry.is_empty:
            raise ValueError(
                f"must be a non-empty Polygon or MultiPolygon, got {geometry.geom_type}"
            )
        return value

    @field_validator("post_processing", mode="before")
    @classmethod
    def _default_post_processing(cls, value: Any) -> Any:
        """No steps (null or ``[]``) means the default NMS, as in the reference."""
        return [PostProcessingStep()] if value is None or value == [] else value

    @field_validator("feature_properties", mode="before")
    @classmethod
    def _properties_as_list(cls, value: Any) -> Any:
        """Accept a single object as well as the API's list of objects."""
        return [value] if isinstance(value, dict) else value

    @field_validator(
        "image_processor_tile_format", "image_processor_tile_compression", mode="before"
    )
    @classmethod
    def _upper_enum(cls, value: Any) -> Any:
        """Enum values are case-insensitive on the wire ("png" == "PNG")."""
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_consistency(self) -> ImageRequest:
        """Cross-field rules: overlap < tile size, a valid encoding, at least one output."""
        if self.image_processor_tile_overlap >= self.image_processor_tile_size:
            raise ValueError(
                f"imageProcessorTileOverlap ({self.image_processor_tile_overlap}) must be smaller"
                f" than imageProcessorTileSize ({self.image_processor_tile_size})"
            )
        fmt, comp = self.image_processor_tile_format, self.image_processor_tile_compression
        if comp not in VALID_ENCODINGS[fmt]:
            allowed = ", ".join(sorted(VALID_ENCODINGS[fmt]))
            raise ValueError(
                f"imageProcessorTileCompression {comp} cannot be used with"
                f" imageProcessorTileFormat {fmt} (allowed: {allowed})"
            )
        if (self.output_bucket is None) != (self.output_prefix is None) and not self.outputs:
            raise ValueError("outputBucket and outputPrefix must be given together")
        if not self.all_outputs:
            raise ValueError("outputs: at least one S3 or Kinesis output is required")
        return self

    @property
    def all_outputs(self) -> list[S3Output | KinesisOutput]:
        """The outputs, with the legacy ``outputBucket``/``outputPrefix`` pair as an S3 output."""
        outputs: list[S3Output | KinesisOutput] = list(self.outputs)
        if self.output_bucket is not None and self.output_prefix is not None:
            legacy = S3Output(type="S3", bucket=self.output_bucket, prefix=self.output_prefix)
            if legacy not in outputs:
                outputs.append(legacy)
        return outputs

    @property
    def algorithm(self) -> Algorithm | None:
        """The duplicate removal algorithm, or None when switched off (``algorithmType``
        NONE)."""
        algorithm = self.post_processing[0].algorithm
        return None if algorithm.algorithm_type is AlgorithmType.NONE else algorithm

    @property
    def merged_feature_properties(self) -> dict[str, Any]:
        """The request's featureProperties merged into one mapping (later entries win)."""
        merged: dict[str, Any] = {}
        for entry in self.feature_properties:
            merged.update(entry)
        return merged
