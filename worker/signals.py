"""Stop signals that arrive before the event loop listens for them, or after it has stopped.

``python -m worker`` spends about a second importing the service before its event loop installs
the SIGTERM/SIGINT handlers that drain the work in hand; a platform that stops a worker then
(a scale-in, a chaos run) used to kill it with the default action, exit status -15. These
handlers only note the signal: the worker starts, finds itself stopped, releases nothing (it
holds nothing) and exits 0. Nothing here imports more than the standard library.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class EarlyStop:
    """Notes stop signals until the event loop takes them over (and after it gave them back)."""

    def __init__(self) -> None:
        """Nothing noted yet; call :meth:`install`."""
        self.requested = False

    def _note(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        self.requested = True

    def install(self) -> None:
        """Note SIGTERM and SIGINT from now on instead of dying of them."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._note)
