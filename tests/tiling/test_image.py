"""Image headers, window reads and the affine sensor model on the real sample NITF."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio

from infra.local_stack import SAMPLE_IMAGE
from tiling.errors import ImageOpenError
from tiling.grid import Window
from tiling.image import WindowReader, describe_image
from tiling.sensor import sensor_model_for


def dms(text: str) -> float:
    """IGEOLO ddmmssX / dddmmssY to degrees."""
    deg_len = 2 if text[-1] in "NS" else 3
    value = (
        int(text[:deg_len])
        + int(text[deg_len : deg_len + 2]) / 60
        + int(text[deg_len + 2 : -1]) / 3600
    )
    return -value if text[-1] in "SW" else value


def test_sample_nitf_corners_map_to_igeolo() -> None:
    info = describe_image(str(SAMPLE_IMAGE))
    assert (info.width, info.height, info.band_count, info.dtype) == (1024, 1024, 1, "uint8")
    igeolo = info.tags["NITF_IGEOLO"]
    corners = [igeolo[i : i + 15] for i in range(0, 60, 15)]
    expected = [(dms(c[7:]), dms(c[:7])) for c in corners]  # UL, UR, LR, LL as lon, lat
    model = sensor_model_for(info.transform, info.crs)
    assert model is not None
    # IGEOLO gives pixel centres of the corner pixels.
    cols = np.array([0.5, 1023.5, 1023.5, 0.5])
    rows = np.array([0.5, 0.5, 1023.5, 1023.5])
    lons, lats = model.image_to_world(cols, rows)
    for lon, lat, (elon, elat) in zip(lons, lats, expected, strict=True):
        assert lon == pytest.approx(elon, abs=1 / 3600)
        assert lat == pytest.approx(elat, abs=1 / 3600)


def test_window_reader_reads_windows() -> None:
    with WindowReader(str(SAMPLE_IMAGE)) as reader:
        pixels = reader.read(Window(100, 200, 64, 32))
    with rasterio.open(SAMPLE_IMAGE) as src:
        expected = src.read(window=((200, 232), (100, 164)))
    np.testing.assert_array_equal(pixels, expected)


def test_missing_image(tmp_path: Path) -> None:
    with pytest.raises(ImageOpenError, match="cannot open image"):
        describe_image(str(tmp_path / "nothing.tif"))


def test_a_reader_opened_on_one_thread_reads_on_another() -> None:
    with ThreadPoolExecutor(1) as first, ThreadPoolExecutor(1) as second:
        reader = WindowReader(str(SAMPLE_IMAGE))
        a = first.submit(reader.read, Window(0, 0, 16, 16)).result()
        b = second.submit(reader.read, Window(16, 0, 16, 16)).result()
        reader.close()
    with rasterio.open(SAMPLE_IMAGE) as src:
        np.testing.assert_array_equal(a, src.read(window=((0, 16), (0, 16))))
        np.testing.assert_array_equal(b, src.read(window=((0, 16), (16, 32))))
    # Closed: the next read opens the image again.
    np.testing.assert_array_equal(reader.read(Window(0, 0, 16, 16)), a)
    reader.close()
