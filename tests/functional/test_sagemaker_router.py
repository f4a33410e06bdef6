"""The local SageMaker runtime router answers like SageMaker: unknown endpoints are refused."""

import json
from pathlib import Path

import boto3
import numpy as np
import pytest
from affine import Affine
from botocore.exceptions import ClientError
from rasterio.crs import CRS

from tests.functional.helpers import Stack, write_geotiff

pytestmark = pytest.mark.functional

TILE = b"not read: the endpoint check comes first"


def runtime(stack: Stack) -> object:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=stack.local.aws_env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"],
        region_name="us-east-1",
    )


def test_unknown_endpoint_is_a_validation_error_even_when_attributes_pick_a_model(
    stack: Stack,
) -> None:
    client = runtime(stack)
    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint(  # type: ignore[attr-defined]
            EndpointName="centrepoint",  # a typo of "centerpoint"
            Body=TILE,
            CustomAttributes="model_selection=centerpoint",
        )
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationError"
    assert error["Message"] == "Endpoint centrepoint of account 123456789012 not found."


def test_endpoint_created_in_the_emulator_exists(stack: Stack) -> None:
    sagemaker = boto3.client(
        "sagemaker", endpoint_url=stack.local.endpoint_url, region_name="us-east-1"
    )
    name = "router-created"
    sagemaker.create_model(
        ModelName=name,
        ExecutionRoleArn="arn:aws:iam::123456789012:role/sagemaker",
        PrimaryContainer={"Image": "centerpoint"},
    )
    variant = {"VariantName": "main", "ModelName": name, "InitialInstanceCount": 1}
    sagemaker.create_endpoint_config(
        EndpointConfigName=name, ProductionVariants=[{**variant, "InstanceType": "ml.m5.large"}]
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=name)
    with pytest.raises(ClientError) as caught:  # it exists: the model server rejects the bytes
        runtime(stack).invoke_endpoint(  # type: ignore[attr-defined]
            EndpointName=name, Body=TILE, CustomAttributes="model_selection=centerpoint"
        )
    assert caught.value.response["Error"]["Code"] == "ModelError"


def test_a_job_on_a_misspelt_endpoint_fails_with_the_reason(stack: Stack, tmp_path: Path) -> None:
    transform = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_500_000.0)
    image = write_geotiff(
        tmp_path / "typo.tif", np.full((1, 256, 256), 90, np.uint8), transform, CRS.from_epsg(32618)
    )
    request = stack.request(
        stack.upload(image),
        imageProcessor={"name": "centrepoint", "type": "SM_ENDPOINT"},
        imageProcessorParameters={"CustomAttributes": "model_selection=centerpoint"},
        imageProcessorTileSize=256,
        imageProcessorTileOverlap=0,
    )
    stack.submit(json.dumps(request))
    final = stack.statuses.wait_terminal(request["jobId"])[-1]
    assert final.attributes["status"] == "FAILED"
    assert "Endpoint centrepoint of account 123456789012 not found." in final.message
