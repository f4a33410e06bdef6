"""Realistic benchmark images: incompressible 3-band uint8 content, generated deterministically.

Imagery as it comes from a sensor does not compress much; a benchmark on flat blocks measures
the easy case. These images hold seeded random bytes (a fresh generator per block row, so any
size is made in bounded memory and the same seed always gives the same file):

- ``tiff``: an uncompressed tiled GeoTIFF (256 px blocks, pixel-interleaved), BigTIFF when
  needed;
- ``cog``: a DEFLATE Cloud Optimized GeoTIFF (512 px blocks, overviews) of the same pixels;
- ``nitf``: an uncompressed NITF 2.1 (IC=NC) of the same pixels, UTM corners.

    python -m benchmarks.imagery --size 10000 --kind tiff --out /tmp/real.tif
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

KINDS = ("tiff", "cog", "nitf")
SUFFIXES = {"tiff": ".tif", "cog": ".cog.tif", "nitf": ".ntf"}
STRIP_ROWS = 256
TRANSFORM = Affine(0.5, 0, 583000, 0, -0.5, 4507000)
CRS_UTM = CRS.from_epsg(32618)


def strip(size: int, row_off: int, rows: int, seed: int = 0) -> np.ndarray:
    """The pixels of rows ``row_off`` to ``row_off + rows`` (3 bands, incompressible)."""
    rng = np.random.default_rng([seed, row_off])
    return rng.integers(0, 256, size=(3, rows, size), dtype=np.uint8)


def write_strips(path: Path, size: int, driver: str, **options: object) -> Path:
    """The incompressible pixels written strip by strip as a ``driver`` file (3 bands, uint8,
    the UTM grid), with the driver's creation ``options``."""
    profile = {
        "driver": driver,
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": CRS_UTM,
        "transform": TRANSFORM,
        **options,
    }
    with rasterio.open(path, "w", **profile) as dst:
        for row_off in range(0, size, STRIP_ROWS):
            rows = min(STRIP_ROWS, size - row_off)
            dst.write(strip(size, row_off, rows), window=Window(0, row_off, size, rows))
    return path


def write_tiff(path: Path, size: int) -> Path:
    """The uncompressed tiled GeoTIFF."""
    return write_strips(
        path,
        size,
        "GTiff",
        tiled=True,
        blockxsize=256,
        blockysize=256,
        interleave="pixel",
        BIGTIFF="IF_SAFER",
    )


def write_cog(path: Path, source: Path) -> Path:
    """A DEFLATE COG (512 px blocks, overviews) of the GeoTIFF at ``source``."""
    rasterio.shutil.copy(
        source,
        path,
        driver="COG",
        COMPRESS="DEFLATE",
        BLOCKSIZE=512,
        BIGTIFF="IF_SAFER",
        NUM_THREADS="ALL_CPUS",
    )
    return path


def write_nitf(path: Path, size: int) -> Path:
    """An uncompressed NITF 2.1 with the same pixels, georeferenced by its UTM corners."""
    return write_strips(path, size, "NITF", IC="NC", ICORDS="N")


def make_image(directory: Path, size: int, kind: str) -> Path:
    """The ``kind`` image of ``size`` x ``size`` in ``directory``, made once and reused."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"real-{size}{SUFFIXES[kind]}"
    if path.exists():
        return path
    partial = path.with_name("partial-" + path.name)
    if kind == "tiff":
        write_tiff(partial, size)
    elif kind == "cog":
        write_cog(partial, make_image(directory, size, "tiff"))
    else:
        write_nitf(partial, size)
    partial.rename(path)
    return path


def main() -> None:
    """Write one image."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--kind", choices=KINDS, default="tiff")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/modelrunner-bench"))
    args = parser.parse_args()
    print(make_image(args.dir, args.size, args.kind))


if __name__ == "__main__":
    main()
