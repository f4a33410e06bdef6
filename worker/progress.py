"""Output progress kept in the image's record: what each stream has acknowledged.

A stream cannot be rewritten as an S3 object can: what was put stays. So a finaliser records,
after every PutRecords call, how many of the image's features (in output order) the stream has
acknowledged, and a finaliser that takes over (or the next attempt after an output failed)
starts after them. Only the lease holder records progress.
"""

from __future__ import annotations

from collections.abc import Mapping

from worker.errors import FinalisingElsewhere
from worker.images import ImageRef
from worker.ports import JobStore


class RecordedProgress:
    """An :class:`~worker.ports.OutputProgress` over the image's job record."""

    def __init__(
        self,
        jobs: JobStore,
        ref: ImageRef,
        lease: tuple[str, float],
        recorded: Mapping[str, int],
    ) -> None:
        """Record through ``jobs`` for ``ref``, as the holder of ``lease`` (owner, seconds),
        starting from what the record held (``recorded``)."""
        self._jobs = jobs
        self._ref = ref
        self._owner, self._lease_s = lease
        self._counts = dict(recorded)

    def acknowledged(self, output: str) -> int:
        """Features of ``output`` acknowledged so far."""
        return self._counts.get(output, 0)

    async def advance(self, output: str, count: int) -> None:
        """Record that ``output`` acknowledged its first ``count`` features.

        Raises:
            FinalisingElsewhere: If the lease was lost: another worker may be writing.
        """
        ref = self._ref
        if not await self._jobs.advance_output(ref.job_id, ref.url, self._owner, output, count):
            raise FinalisingElsewhere(ref.job_id, ref.url, self._lease_s)
        self._counts[output] = count
