"""Fixtures of the SICD tests (test_sicd_*.py): one synthetic SICD for the whole package.

Package-scoped: the SICD modules share one file, one description and one sarpy reader of it,
as they did when they were one module.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.tiling.sicd_images import sarpy_reader, write_sicd
from tiling.image import ImageInfo, describe_image


@pytest.fixture(scope="package")
def sicd_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sicd(tmp_path_factory.mktemp("sicd") / "image.nitf")


@pytest.fixture(scope="package")
def info(sicd_path: Path) -> ImageInfo:
    return describe_image(str(sicd_path))


@pytest.fixture(scope="package")
def reference(sicd_path: Path) -> Iterator[Any]:
    reader = sarpy_reader(sicd_path)
    yield reader
    reader.close()
