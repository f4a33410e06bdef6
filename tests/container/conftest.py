"""Container tests: the images built by infra/container/build.sh, run on a real engine."""

import pytest

from tests.container.engine import require_engine


@pytest.fixture(scope="session", autouse=True)
def engine() -> None:
    require_engine()
