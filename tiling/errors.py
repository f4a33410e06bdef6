"""Errors raised by the tiling package; one rooted tree."""


class TilingError(Exception):
    """Root of every error raised by :mod:`tiling`."""


class InvalidGridError(TilingError, ValueError):
    """Tile size, overlap or image size cannot form a grid."""


class ImageOpenError(TilingError):
    """The image could not be opened or read."""


class UnsupportedEncodingError(TilingError, ValueError):
    """The tile format / compression pair cannot be produced."""


class TileDecodeError(TilingError, ValueError):
    """Bytes that do not decode as an image."""
