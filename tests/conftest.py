"""Shared test configuration."""

from hypothesis import settings

# Timing on shared 2-core machines is noisy: laws are checked, not speed.
settings.register_profile("default", deadline=None)
settings.load_profile("default")
