"""A SageMaker endpoint as moto serves it: canned replies through its runtime API.

The other SageMaker tests run real inference through the local runtime router; this one points a
worker's ``sagemaker-runtime`` client at moto itself, whose replies are queued through its API.
"""

import json
import urllib.request
import uuid
from pathlib import Path

import boto3
import numpy as np
import pytest

from tests.functional.helpers import Stack, own_worker, write_geotiff
from tests.functional.test_end_to_end import TRANSFORM, UTM

pytestmark = pytest.mark.functional


def feature(col: float, row: float, label: str) -> dict[str, object]:
    box = [col, row, col + 20, row + 10]
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [col, row]},
        "properties": {
            "bounds_imcoords": box,
            "feature_types": {label: 0.9},
        },
    }


def queue_replies(moto_url: str, replies: list[list[dict[str, object]]]) -> None:
    """Queue moto's next ``invoke_endpoint`` replies (one per distinct request)."""
    results = [
        {
            "Body": json.dumps({"type": "FeatureCollection", "features": features}),
            "ContentType": "application/json",
            "InvokedProductionVariant": "only",
            "CustomAttributes": "",
        }
        for features in replies
    ]
    request = urllib.request.Request(
        f"{moto_url}/moto-api/static/sagemaker/endpoint-results",
        data=json.dumps({"results": results}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 201


def test_sm_endpoint_features_from_canned_replies(stack: Stack, tmp_path: Path) -> None:
    moto_url = stack.local.endpoint_url
    session = boto3.session.Session(region_name="us-east-1")
    sagemaker = session.client("sagemaker", endpoint_url=moto_url)
    name = f"canned-{uuid.uuid4().hex[:8]}"
    sagemaker.create_model(
        ModelName=name,
        ExecutionRoleArn="arn:aws:iam::123456789012:role/sagemaker",
        PrimaryContainer={"Image": "detector"},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "only",
                "ModelName": name,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=name)
    # Two tiles with different pixels: two distinct requests, two replies taken in turn.
    queue_replies(
        moto_url,
        [[feature(10, 10, "ship")], [feature(100, 200, "ship"), feature(300, 50, "boat")]],
    )
    # A worker of its own (own queues) whose sagemaker-runtime client talks to moto.
    worker, queues = own_worker(stack, "canned", AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=moto_url)
    try:
        pixels = np.full((1, 512, 1024), 30, dtype=np.uint8)
        # moto decodes request bodies as UTF-8: uncompressed NITF tiles (an ASCII header) of
        # pixels below 128 are valid UTF-8, so the tiles reach its canned-reply queue intact.
        pixels[:, :, 512:] = 100
        image_url = stack.upload(write_geotiff(tmp_path / "canned.tif", pixels, TRANSFORM, UTM))
        request = stack.request(
            image_url,
            imageProcessor={"name": name, "type": "SM_ENDPOINT"},
            imageProcessorTileOverlap=0,
            imageProcessorTileFormat="NITF",
            imageProcessorTileCompression="NONE",
        )
        stack.sqs.send_message(
            QueueUrl=queues["MODELRUNNER_IMAGE_QUEUE"], MessageBody=json.dumps(request)
        )
        final = stack.statuses.wait_terminal(request["jobId"])[-1]
        assert final.attributes["status"] == "SUCCESS", final.message
        features = stack.result(request["jobId"])["features"]
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert worker.returncode == 0
    assert len(features) == 3
    classes = sorted(f["properties"]["featureClasses"][0]["iri"] for f in features)
    assert classes == ["boat", "ship", "ship"]
    # Each reply was shifted by its own tile: every box lies inside one of the two tiles.
    for f in features:
        minx, miny, maxx, maxy = f["properties"]["imageBBox"]
        assert maxx - minx == 20
        assert maxy - miny == 10
        assert (maxx <= 512) or (minx >= 512)
