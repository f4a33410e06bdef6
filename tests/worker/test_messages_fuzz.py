"""Fuzzing the request parser: any input gives a request or InvalidRequestError, nothing else."""

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.contract.parsing import job_id_of, parse_image_request
from worker.errors import InvalidRequestError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)

FIELDS = [
    "jobId",
    "jobName",
    "imageUrls",
    "outputs",
    "outputBucket",
    "outputPrefix",
    "imageProcessor",
    "imageProcessorParameters",
    "imageProcessorTileSize",
    "imageProcessorTileOverlap",
    "imageProcessorTileFormat",
    "imageProcessorTileCompression",
    "imageReadRole",
    "regionOfInterest",
    "featureProperties",
    "postProcessing",
]

VALID: dict[str, Any] = {
    "jobId": "j",
    "imageUrls": ["s3://b/i.tif"],
    "outputs": [{"type": "S3", "bucket": "bucket", "prefix": "p"}],
    "imageProcessor": {"name": "e", "type": "SM_ENDPOINT"},
    "regionOfInterest": "POLYGON((0 0, 1 0, 1 1, 0 0))",
    "postProcessing": [{"step": "FEATURE_DISTILLATION", "algorithm": {"algorithmType": "NMS"}}],
}


def parses_or_refuses(body: str | bytes) -> None:
    with contextlib.suppress(InvalidRequestError):
        parse_image_request(body)
    job_id_of(body)


@settings(max_examples=700, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_any_json(value: Any) -> None:
    parses_or_refuses(json.dumps(value))


@settings(max_examples=600)
@given(data=st.binary(max_size=300))
def test_any_bytes(data: bytes) -> None:
    parses_or_refuses(data)


@settings(max_examples=700, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(FIELDS), json_values | st.text(), max_size=4))
def test_valid_request_with_fields_replaced(changes: dict[str, Any]) -> None:
    parses_or_refuses(json.dumps({**VALID, **changes}))


def test_deep_nesting_is_refused_not_a_crash() -> None:
    parses_or_refuses("[" * 100_000 + "]" * 100_000)
    parses_or_refuses('{"jobId": ' + "[" * 5000 + "]" * 5000 + "}")
