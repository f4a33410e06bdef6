"""Encoders take consecutive tiles in one trip to the thread pool; a bad tile fails alone."""

import numpy as np
import numpy.typing as npt

from infra.local_stack import SAMPLE_IMAGE
from tiling.encode import decode_tile
from tiling.errors import ImageOpenError
from tiling.grid import Window
from tiling.image import WindowReader, describe_image
from worker.tiles import encode_windows


class OneBadWindow(WindowReader):
    """Reads the sample image, except one window, which fails as a corrupt block does."""

    def __init__(self, url: str, bad: Window) -> None:
        super().__init__(url)
        self.bad = bad

    def read(self, window: Window) -> npt.NDArray[np.uint8]:
        if window == self.bad:
            raise ImageOpenError(f"cannot read {window}: corrupt block")
        return super().read(window)


def test_a_tile_that_cannot_be_read_fails_alone() -> None:
    info = describe_image(str(SAMPLE_IMAGE))
    windows = [Window(64 * i, 0, 64, 64) for i in range(4)]
    with OneBadWindow(info.url, windows[1]) as reader:
        encoded = encode_windows(reader, info, windows, "GTIFF", "NONE")
        expected = [reader.read(w) for w in (windows[0], windows[2], windows[3])]
    assert isinstance(encoded[1], ImageOpenError)
    assert "corrupt block" in str(encoded[1])
    tiles = [e for e in encoded if isinstance(e, bytes)]
    assert len(tiles) == 3
    for tile, pixels in zip(tiles, expected, strict=True):
        np.testing.assert_array_equal(decode_tile(tile), pixels)
