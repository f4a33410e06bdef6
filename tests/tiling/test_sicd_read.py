"""SICD NITF input: detection, the I and Q pixels as sarpy reads them, the DES holding the XML."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from infra.local_stack import SAMPLE_IMAGE
from tests.tiling.sicd_images import COLS, ROWS, sarpy_reader, write_sicd
from tiling.encode import resolve_encoding
from tiling.errors import UnsupportedEncodingError
from tiling.grid import Window
from tiling.image import ImageInfo, WindowReader, describe_image
from tiling.nitf_des import SICD_DES_NAMES, backslash_quote, find_xml_des


def test_sicd_nitf_is_described_as_sicd(info: ImageInfo) -> None:
    assert info.sicd is not None
    assert info.sicd.name == "XML_DATA_CONTENT"
    assert (info.width, info.height, info.band_count, info.dtype) == (COLS, ROWS, 2, "float32")
    # GDAL's IGEOLO corner GCPs are not used: the SICD is the georeferencing.
    assert info.transform is None
    assert info.gcps is None


def test_other_nitf_is_not_sicd() -> None:
    assert describe_image(str(SAMPLE_IMAGE)).sicd is None


@pytest.mark.parametrize(
    ("pixel_type", "dtype"), [("RE32F_IM32F", "float32"), ("RE16I_IM16I", "int16")]
)
def test_pixels_are_i_and_q_bands_as_sarpy_reads_them(
    tmp_path: Path, pixel_type: str, dtype: str
) -> None:
    path = write_sicd(tmp_path / "image.nitf", pixel_type)
    info = describe_image(str(path))
    assert (info.band_count, info.dtype) == (2, dtype)
    window = Window(37, 21, 90, 64)
    with WindowReader(str(path)) as reader:
        pixels = reader.read(window)
    sarpy = sarpy_reader(path)
    expected = sarpy[window.row_off : window.row_end, window.col_off : window.col_end]
    sarpy.close()
    np.testing.assert_array_equal(pixels[0], expected.real)
    np.testing.assert_array_equal(pixels[1], expected.imag)


def test_sicd_in_several_image_segments_is_read_as_one(tmp_path: Path, reference: Any) -> None:
    path = write_sicd(tmp_path / "segments.nitf", row_limit=70)  # segments of 70, 70, 60 rows
    with rasterio.open(path) as src:
        assert len(src.subdatasets) == 3
        assert src.height == 70
    info = describe_image(str(path))
    assert (info.width, info.height) == (COLS, ROWS)
    window = Window(10, 50, 40, 120)  # across both segment boundaries
    with WindowReader(str(path)) as reader:
        pixels = reader.read(window)
    expected = reference[50:170, 10:50]
    np.testing.assert_array_equal(pixels[0] + 1j * pixels[1], expected)


@pytest.mark.parametrize(("fmt", "compression"), [("PNG", "NONE"), ("JPEG", "NONE")])
def test_png_and_jpeg_refuse_sicd_pixels(info: ImageInfo, fmt: str, compression: str) -> None:
    with pytest.raises(
        UnsupportedEncodingError, match=rf"float32 pixels cannot be encoded as {fmt}"
    ):
        resolve_encoding(info.dtype, fmt, compression)


def test_j2k_falls_back_to_uncompressed_nitf_for_float_iq(info: ImageInfo) -> None:
    assert resolve_encoding(info.dtype, "NITF", "J2K") == ("NITF", "NONE")


def test_backslash_quote() -> None:
    assert backslash_quote('a\\b"c\nd\0') == 'a\\\\b\\"c\\nd\\0'


def test_des_data_given_as_base64_is_read() -> None:
    listing = (
        '<des_list><des name="XML_DATA_CONTENT"><field name="DESVER" value="01"/>'
        '<field name="DESSHL" value="0005"/><field name="DESSHF" value="99999"/>'
        '<field name="DESDATA" value="PFNJQ0QgeG1sbnM9InVybjpTSUNEOjEuMy4wIj48QS8+PC9TSUNEPg=="/>'
        "</des></des_list>"
    )  # base64 of <SICD xmlns="urn:SICD:1.3.0"><A/></SICD>
    des = find_xml_des(listing, SICD_DES_NAMES, "SICD")
    assert des is not None
    assert des.xml == '<SICD xmlns="urn:SICD:1.3.0"><A/></SICD>'
    assert des.user_header == "99999"
    assert find_xml_des(listing, SICD_DES_NAMES, "SIDD") is None
