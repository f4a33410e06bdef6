"""One stack of its own (moto, models) for every distributed test, and the fleet on it.

The stack and what is computed on it once (the test image, the features of one worker doing
every region) are package-scoped: the modules of this package share one instance, as the tests
did when they were one module, and it stops when the last of them has run.
"""

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from infra.local_stack import LocalStack
from tests.functional.distributed.fleet import Fleet, flood_request, run_job, summary, terminal
from tests.functional.helpers import Stack, stack_of, write_geotiff
from tests.functional.test_end_to_end import TRANSFORM, UTM


@pytest.fixture(scope="package")
def fleet_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with LocalStack(tmp_path_factory.mktemp("fleet")) as local:
        yield stack_of(local, None)  # type: ignore[arg-type]  # the fleet starts its own


@pytest.fixture
def fleet(fleet_stack: Stack) -> Iterator[Fleet]:
    workers = Fleet(fleet_stack.local)
    yield workers
    workers.stop_all()


@pytest.fixture(scope="package")
def image_url(fleet_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> str:
    """1500 x 1000 px: at tile 256 / overlap 32 and region 512, 35 tiles in 12 regions."""
    pixels = np.random.default_rng(7).integers(0, 255, (1, 1000, 1500), dtype=np.uint8)
    path = tmp_path_factory.mktemp("fleet-image") / "fleet.tif"
    return fleet_stack.upload(write_geotiff(path, pixels, TRANSFORM, UTM))


@pytest.fixture(scope="package")
def clean_result(fleet_stack: Stack, image_url: str) -> list[tuple[Any, ...]]:
    """The features of one worker doing every region."""
    workers = Fleet(fleet_stack.local)
    workers.start()
    try:
        request = flood_request(fleet_stack, image_url)
        statuses = run_job(fleet_stack, request)
        assert terminal(statuses) == ["SUCCESS"]
        return summary(fleet_stack.result(request["jobId"]))
    finally:
        workers.stop_all()
