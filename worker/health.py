"""Liveness: the loop touches a file every cycle; ``python -m worker.health`` checks its age.

A container health check that runs this fails when the loop is stuck (not merely when the
process exists): the file is touched after every poll, so it is never older than the poll wait
plus one receive, unless the loop has stopped turning.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

DEFAULT_MAX_AGE_S = 120.0


def touch(path: str | None) -> None:
    """Mark the loop alive (no-op without a path)."""
    if path:
        Path(path).touch()


def is_alive(path: str, max_age_s: float, now: float | None = None) -> bool:
    """Whether ``path`` was touched within ``max_age_s``."""
    try:
        modified = Path(path).stat().st_mtime
    except OSError:
        return False
    return (time.time() if now is None else now) - modified <= max_age_s


def main() -> int:
    """Exit 0 if the worker's health file is fresh, 1 otherwise (with the reason)."""
    path = os.environ.get("MODELRUNNER_HEALTH_FILE")
    if not path:
        print("MODELRUNNER_HEALTH_FILE is not set", file=sys.stderr)  # noqa: T201
        return 1
    max_age_s = float(os.environ.get("MODELRUNNER_HEALTH_MAX_AGE_S", DEFAULT_MAX_AGE_S))
    if is_alive(path, max_age_s):
        return 0
    print(f"worker loop not seen within {max_age_s:.0f}s ({path})", file=sys.stderr)  # noqa: T201
    return 1


if __name__ == "__main__":
    sys.exit(main())
