"""Errors raised by the postprocessing package; one rooted tree."""


class PostprocessingError(Exception):
    """Root of every error raised by :mod:`postprocessing`."""


class ModelOutputError(PostprocessingError, ValueError):
    """A model reply is not a GeoJSON FeatureCollection with pixel geometries."""
