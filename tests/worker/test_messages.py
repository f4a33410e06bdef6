"""ImageRequest parsing: every field, defaults, legacy fields and clear errors."""

import json
from typing import Any

import pytest

from worker.contract.messages import (
    AlgorithmType,
    KinesisOutput,
    ProcessorType,
    S3Output,
    TileCompression,
    TileFormat,
)
from worker.contract.parsing import RequestLimits, job_id_of, parse_image_request
from worker.errors import InvalidRequestError


def minimal(**extra: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "jobId": "job-1",
        "imageUrls": ["s3://bucket/image.tif"],
        "outputs": [{"type": "S3", "bucket": "results", "prefix": "out"}],
        "imageProcessor": {"name": "http://127.0.0.1:1/invocations", "type": "HTTP_ENDPOINT"},
    }
    request.update(extra)
    return request


def parse(request: dict[str, Any]) -> Any:
    return parse_image_request(json.dumps(request))


def test_every_field() -> None:
    request = parse(
        {
            "jobId": "job-7",
            "jobName": "airfields",
            "imageUrls": ["s3://b/one.ntf", "s3://b/two.tif"],
            "outputs": [
                {
                    "type": "S3",
                    "bucket": "results",
                    "prefix": "p/",
                    "role": "arn:aws:iam::1:role/w",
                },
                {"type": "Kinesis", "stream": "s", "batchSize": 250, "assumedRole": "arn:r"},
            ],
            "imageProcessor": {"name": "ep", "type": "SM_ENDPOINT", "assumedRole": "arn:m"},
            "imageProcessorParameters": {"CustomAttributes": "a=b", "TargetVariant": "v1"},
            "imageProcessorTileSize": 512,
            "imageProcessorTileOverlap": 128,
            "imageProcessorTileFormat": "GTIFF",
            "imageProcessorTileCompression": "LZW",
            "imageReadRole": "arn:read",
            "regionOfInterest": "POLYGON((0 0, 1 0, 1 1, 0 0))",
            "featureProperties": [{"a": 1}, {"b": 2}],
            "postProcessing": [
                {
                    "step": "FEATURE_DISTILLATION",
                    "algorithm": {
                        "algorithmType": "SOFT_NMS",
                        "iouThreshold": 0.5,
                        "sigma": 0.2,
                        "skipBoxThreshold": 0.01,
                    },
                }
            ],
        }
    )
    assert request.job_id == "job-7"
    assert request.job_name == "airfields"
    assert request.image_urls == ["s3://b/one.ntf", "s3://b/two.tif"]
    s3, kinesis = request.all_outputs
    assert isinstance(s3, S3Output)
    assert s3.prefix == "p/"
    assert s3.role == "arn:aws:iam::1:role/w"
    assert isinstance(kinesis, KinesisOutput)
    assert kinesis.batch_size == 250
    assert kinesis.assumed_role == "arn:r"
    assert request.image_processor.type is ProcessorType.SM_ENDPOINT
    assert request.image_processor.assumed_role == "arn:m"
    assert request.image_processor_parameters["TargetVariant"] == "v1"
    assert request.image_processor_tile_size == 512
    assert request.image_processor_tile_overlap == 128
    assert request.image_processor_tile_format is TileFormat.GTIFF
    assert request.image_processor_tile_compression is TileCompression.LZW
    assert request.image_read_role == "arn:read"
    assert request.region_of_interest is not None
    assert request.merged_feature_properties == {"a": 1, "b": 2}
    algorithm = request.algorithm
    assert algorithm is not None
    assert algorithm.algorithm_type is AlgorithmType.SOFT_NMS
    assert (algorithm.iou_threshold, algorithm.sigma, algorithm.skip_box_threshold) == (
        0.5,
        0.2,
        0.01,
    )


def test_documented_defaults_are_applied() -> None:
    request = parse(minimal())
    assert request.image_processor_tile_size == 1024
    assert request.image_processor_tile_overlap == 50
    assert request.image_processor_tile_format is TileFormat.NITF
    assert request.image_processor_tile_compression is TileCompression.NONE
    assert request.algorithm is not None
    assert request.algorithm.algorithm_type is AlgorithmType.NMS
    assert request.algorithm.iou_threshold == 0.75


def test_reference_defaults_for_processor_type_and_post_processing() -> None:
    # As the reference implementation: a missing imageProcessor.type is SM_ENDPOINT and no
    # post-processing steps (null or []) means its default NMS at 0.75.
    post_processing: list[Any] | None
    for post_processing in ([], None):
        request = parse(
            minimal(imageProcessor={"name": "my-endpoint"}, postProcessing=post_processing)
        )
        assert request.image_processor.type is ProcessorType.SM_ENDPOINT
        assert request.algorithm is not None
        assert request.algorithm.algorithm_type is AlgorithmType.NMS
        assert request.algorithm.iou_threshold == 0.75


def test_duplicate_removal_is_switched_off_explicitly() -> None:
    step = {"step": "FEATURE_DISTILLATION", "algorithm": {"algorithmType": "NONE"}}
    assert parse(minimal(postProcessing=[step])).algorithm is None


def test_legacy_output_bucket_and_prefix() -> None:
    raw = minimal(outputBucket="legacy", outputPrefix="old/")
    del raw["outputs"]
    (output,) = parse(raw).all_outputs
    assert output == S3Output(type="S3", bucket="legacy", prefix="old/")


def test_snake_case_names_and_lower_case_enums_accepted() -> None:
    raw = minimal()
    raw["image_processor_tile_format"] = "png"
    assert parse(raw).image_processor_tile_format is TileFormat.PNG


def test_feature_properties_object_and_unknown_keys() -> None:
    request = parse(minimal(featureProperties={"mission": "x"}, somethingNew=1))
    assert request.merged_feature_properties == {"mission": "x"}


def test_nms_with_skip_box_threshold_is_accepted() -> None:
    algorithm = {"algorithmType": "NMS", "iouThreshold": 0.75, "skipBoxThreshold": 0.5}
    request = parse(
        minimal(postProcessing=[{"step": "FEATURE_DISTILLATION", "algorithm": algorithm}])
    )
    assert request.algorithm is not None
    assert request.algorithm.skip_box_threshold == 0.5


def test_request_is_frozen() -> None:
    request = parse(minimal())
    with pytest.raises(ValueError, match="frozen"):
        request.job_id = "other"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (
            json.dumps({k: v for k, v in minimal().items() if k != "imageUrls"}),
            "imageUrls: Field required",
        ),
        (json.dumps(minimal(imageUrls=[])), "imageUrls"),
        (json.dumps(minimal(imageProcessorTileFormat="BMP")), "imageProcessorTileFormat"),
        (
            json.dumps(minimal(imageProcessorTileCompression="ZSTD")),
            "imageProcessorTileCompression",
        ),
        (
            json.dumps(minimal(imageProcessorTileSize=512, imageProcessorTileOverlap=512)),
            "imageProcessorTileOverlap (512) must be smaller than imageProcessorTileSize (512)",
        ),
        (
            json.dumps(
                minimal(imageProcessorTileFormat="PNG", imageProcessorTileCompression="J2K")
            ),
            "J2K cannot be used with imageProcessorTileFormat PNG",
        ),
        (json.dumps(minimal(outputs=[])), "at least one S3 or Kinesis output"),
        (json.dumps(minimal(jobId="")), "jobId"),
        (
            json.dumps(minimal(regionOfInterest="POLYGON((0 0, 1 0")),
            "regionOfInterest: not valid WKT",
        ),
        (
            json.dumps(minimal(regionOfInterest="POINT (1 2)")),
            "regionOfInterest: must be a non-empty Polygon or MultiPolygon, got Point",
        ),
        (
            json.dumps(minimal(imageProcessorParameters={"Body": "x"})),
            "imageProcessorParameters: unknown parameter(s) Body; allowed: ContentType, Accept",
        ),
        (
            json.dumps(minimal(imageProcessor={"name": "x", "type": "LAMBDA"})),
            "imageProcessor.type",
        ),
        (
            json.dumps(minimal(postProcessing=[{"algorithm": {"iouThreshold": 1.5}}])),
            "postProcessing.0.algorithm.iouThreshold",
        ),
    ],
)
def test_clear_errors(body: str, expected: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_image_request(body)
    assert expected in str(caught.value)


def test_job_id_of_bad_messages() -> None:
    assert job_id_of(json.dumps({"jobId": "j"})) == "j"
    assert job_id_of("garbage") is None
    assert job_id_of("[]") is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"imageProcessorTileSize": 8192},
            "imageProcessorTileSize 8192 is over the limit of 4096 px",
        ),
        (
            {"imageUrls": [f"s3://b/{i}.tif" for i in range(101)]},
            "imageUrls has 101 images; the limit is 100",
        ),
        (
            {
                "regionOfInterest": "POLYGON(("
                + ", ".join(f"{i} {i % 7}" for i in range(10_001))
                + ", 0 0))"
            },
            "regionOfInterest has 10002 vertices; the limit is 10000",
        ),
        ({"featureProperties": [{"x": "y" * 70_000}]}, "featureProperties is 70011 bytes"),
    ],
)
def test_request_limits(change: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidRequestError, match="request over a limit") as caught:
        parse(minimal(**change))
    assert expected in str(caught.value)


def test_message_size_limit() -> None:
    body = json.dumps(minimal(jobName="x" * 300_000))
    with pytest.raises(
        InvalidRequestError, match=r"message body is \d+ bytes; the limit is 260096"
    ):
        parse_image_request(body)
    assert parse_image_request(body, RequestLimits(max_message_bytes=1_000_000)).job_name


def test_the_original_body_is_kept() -> None:
    body = json.dumps(minimal(extraKey=1), indent=3)
    assert parse_image_request(body).original_body == body
    assert parse_image_request(body.encode()).original_body == body
    built = parse(minimal()).model_copy()
    assert json.loads(built.original_body)["jobId"] == "job-1"
