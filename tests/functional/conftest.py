"""A real moto server, a real model server and a real worker process on 127.0.0.1."""

from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen

import pytest

from infra.local_stack import LocalStack
from tests.functional.helpers import Stack, stack_of


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    log_dir = tmp_path_factory.mktemp("stack")
    with LocalStack(log_dir) as stack:
        yield stack


@pytest.fixture(scope="session")
def worker(local_stack: LocalStack) -> Popen[bytes]:
    return local_stack.start_worker(
        "worker", MODELRUNNER_MAX_ATTEMPTS="2", MODELRUNNER_RETRY_DELAY_S="1"
    )


@pytest.fixture(scope="session")
def stack(local_stack: LocalStack, worker: Popen[bytes]) -> Stack:
    return stack_of(local_stack, worker)


@pytest.fixture
def log_dir(local_stack: LocalStack) -> Path:
    return local_stack.log_dir
