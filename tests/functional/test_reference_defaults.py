"""The reference's request defaults, run black box against ModelRunner.

No ``imageProcessor.type`` is a SageMaker endpoint; ``postProcessing: []`` is the default NMS,
and ``NONE`` switches it off.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from tests.functional.helpers import Stack, write_geotiff

pytestmark = pytest.mark.functional


def test_processor_type_and_post_processing_defaults(stack: Stack, tmp_path: Path) -> None:
    # No imageProcessor.type: a SageMaker endpoint (here the local runtime router's "flood").
    # postProcessing [] applies the default NMS, as the reference does; NONE switches it off.
    transform = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_500_000.0)
    pixels = np.random.default_rng(3).integers(0, 255, (1, 1024, 1024), dtype=np.uint8)
    image = stack.upload(
        write_geotiff(tmp_path / "flood.tif", pixels, transform, CRS.from_epsg(32618))
    )
    counts = {}
    for name, steps in (
        ("default", []),
        ("off", [{"step": "FEATURE_DISTILLATION", "algorithm": {"algorithmType": "NONE"}}]),
    ):
        request = stack.request(
            image,
            imageProcessor={"name": "flood"},
            imageProcessorParameters={"CustomAttributes": "flood_volume=200,flood_seed=tile"},
            imageProcessorTileSize=512,
            imageProcessorTileOverlap=256,
            postProcessing=steps,
        )
        stack.submit(json.dumps(request))
        final = stack.statuses.wait_terminal(request["jobId"])[-1]
        assert final.attributes["status"] == "SUCCESS", final.message
        counts[name] = len(stack.result(request["jobId"])["features"])
    assert counts["off"] == 9 * 200  # every box of the 9 tiles
    assert counts["default"] < counts["off"]  # duplicates in the overlap bands removed
