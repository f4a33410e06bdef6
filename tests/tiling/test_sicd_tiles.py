"""SICD chips as tiles: a NITF tile is a SICD of the chip; other formats keep I and Q."""

from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.tiling.sicd_images import COLS, ROWS, model_of, sarpy_reader, write_sicd
from tiling.encode import decode_tile, encode_tile
from tiling.errors import ImageOpenError
from tiling.grid import Window
from tiling.image import ImageInfo, WindowReader, describe_image
from tiling.sicd import igeolo


def test_nitf_tile_is_a_sicd_of_the_chip(tmp_path: Path, info: ImageInfo) -> None:
    window = Window(20, 10, 64, 32)
    with WindowReader(info.url) as reader:
        pixels = reader.read(window)
    tile = tmp_path / "tile.nitf"
    tile.write_bytes(encode_tile(pixels, "NITF", "NONE", info.tile_georef(window)))

    chip = sarpy_reader(tile)  # sarpy's SICD reader accepts it
    structure = chip.get_sicds_as_tuple()[0]
    image_data = structure.ImageData
    assert (image_data.FirstRow, image_data.FirstCol) == (10, 20)
    assert (image_data.NumRows, image_data.NumCols) == (32, 64)
    assert (image_data.FullImage.NumRows, image_data.FullImage.NumCols) == (ROWS, COLS)
    np.testing.assert_array_equal(chip[:, :], pixels[0] + 1j * pixels[1])
    chip.close()

    tile_info = describe_image(str(tile))
    assert tile_info.sicd is not None
    assert (tile_info.tags["NITF_ICAT"], tile_info.tags["NITF_IREP"]) == ("SAR", "NODISPLY")
    with rasterio.open(tile) as src:
        assert [src.tags(b)["NITF_ISUBCAT"] for b in (1, 2)] == ["I", "Q"]
    # The chip's model is the image's, moved by the window's corner.
    cols, rows = np.array([0.5, 63.5, 10.25]), np.array([0.5, 31.5, 7.75])
    got = np.stack(model_of(tile_info).image_to_world(cols, rows))
    full = np.stack(model_of(info).image_to_world(cols + 20, rows + 10))
    assert np.abs(got - full).max() < 1e-9
    # Corners: IGEOLO and the DES polygon are the chip's corner pixel centres.
    corners = np.stack(
        model_of(info).image_to_world(
            np.array([20.5, 83.5, 83.5, 20.5]), np.array([10.5, 10.5, 41.5, 41.5])
        )
    )
    assert tile_info.tags["NITF_IGEOLO"] == igeolo(corners[::-1].T)
    polygon = tile_info.sicd.user_header[283:408]
    lat_lon = [
        (float(polygon[i : i + 12]), float(polygon[i + 12 : i + 25])) for i in range(0, 125, 25)
    ]
    assert np.abs(np.array(lat_lon[:4]) - corners[::-1].T).max() < 1e-8
    assert lat_lon[4] == lat_lon[0]
    icps = structure.GeoData.ImageCorners.get_array(dtype=np.float64)
    assert np.abs(icps - corners[::-1].T).max() < 1e-9


def test_gtiff_tile_keeps_the_i_and_q_bands(info: ImageInfo) -> None:
    window = Window(0, 0, 48, 40)
    with WindowReader(info.url) as reader:
        pixels = reader.read(window)
    decoded = decode_tile(encode_tile(pixels, "GTIFF", "LZW", info.tile_georef(window)))
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, pixels)


def test_j2k_nitf_tile_of_int16_sicd_carries_the_chip_xml(tmp_path: Path) -> None:
    path = write_sicd(tmp_path / "int16.nitf", "RE16I_IM16I")
    info = describe_image(str(path))
    window = Window(100, 50, 32, 32)
    with WindowReader(str(path)) as reader:
        pixels = reader.read(window)
    tile = tmp_path / "tile.nitf"
    tile.write_bytes(encode_tile(pixels, "NITF", "J2K", info.tile_georef(window)))
    tile_info = describe_image(str(tile))
    assert tile_info.tags["NITF_IC"] == "C8"
    assert tile_info.sicd is not None
    assert "<FirstRow>50</FirstRow>" in tile_info.sicd.xml
    assert "<FirstCol>100</FirstCol>" in tile_info.sicd.xml


def test_sicd_that_does_not_match_its_pixels_is_refused(tmp_path: Path, info: ImageInfo) -> None:
    georef = info.tile_georef(Window(0, 0, 64, 32))  # SICD XML of a 32 x 64 chip ...
    tile = tmp_path / "wrong.nitf"
    tile.write_bytes(encode_tile(np.zeros((2, 30, 64), np.float32), "NITF", "NONE", georef))
    with pytest.raises(ImageOpenError, match=r"describes 32x64 pixels .* hold 30x64"):
        describe_image(str(tile))  # ... on 30 x 64 pixels
