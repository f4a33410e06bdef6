"""Shared test configuration.

``make test`` runs property tests with a fixed derivation of examples (``derandomize``), so a
commit that passes once passes again. ``make fuzz`` runs the same properties with fresh random
examples, several rounds, to look for new failures.
"""

from hypothesis import settings

# Timing on shared 2-core machines is noisy: laws are checked, not speed.
settings.register_profile("default", deadline=None, derandomize=True, database=None)
settings.register_profile("fuzz", deadline=None, derandomize=False)
settings.load_profile("default")
