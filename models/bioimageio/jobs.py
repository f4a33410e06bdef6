"""Asynchronous ``infer`` requests: run on a pool of threads, polled by request id.

A request's result is what its work answers (outputs by id, or ``{"error": ...}``); a request
is forgotten ``ttl_s`` after it completes, when the next one is submitted. Thread-safe.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from models.bioimageio.errors import ApiError


@dataclass(slots=True)
class InferJob:
    """One asynchronous ``infer`` request."""

    request_id: str
    submitted_at: float
    started_at: float | None = None
    completed_at: float | None = None
    result: dict[str, Any] | None = None


class InferJobs:
    """The asynchronous requests of one API, and the threads that run them."""

    def __init__(self, workers: int, ttl_s: float) -> None:
        """Run requests on ``workers`` threads; forget them ``ttl_s`` after they complete."""
        self.ttl_s = ttl_s
        self._jobs: dict[str, InferJob] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="infer")

    def submit(self, work: Callable[[], dict[str, Any]]) -> str:
        """Queue ``work``; the request id to poll with :meth:`status`."""
        job = InferJob(request_id=str(uuid.uuid4()), submitted_at=time.time())
        with self._lock:
            self._prune()
            self._jobs[job.request_id] = job
        self._pool.submit(self._run, job, work)
        return job.request_id

    def status(self, request_id: str) -> dict[str, Any]:
        """Where a request is: queue position, times and, when done, its result.

        Raises:
            ApiError: 404 for an unknown (or expired) request.
        """
        with self._lock:
            job = self._jobs.get(request_id)
            if job is None:
                raise ApiError(404, f"request_id: no request {request_id!r} (or it expired)")
            waiting = sorted(
                (j for j in self._jobs.values() if j.started_at is None),
                key=lambda j: j.submitted_at,
            )
        position = next((i + 1 for i, j in enumerate(waiting) if j is job), 0)
        return {
            "request_id": job.request_id,
            "submitted_at": job.submitted_at,
            "started_at": job.started_at,
            "completed_at": job.completed_at,
            "queue_position": position,
            "result": job.result,
        }

    def close(self) -> None:
        """Stop the threads; queued requests are cancelled."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _run(job: InferJob, work: Callable[[], dict[str, Any]]) -> None:
        job.started_at = time.time()
        job.result = work()
        job.completed_at = time.time()

    def _prune(self) -> None:
        """Forget finished jobs older than the lifetime (the caller holds the lock)."""
        horizon = time.time() - self.ttl_s
        for request_id, job in list(self._jobs.items()):
            if job.completed_at is not None and job.completed_at < horizon:
                del self._jobs[request_id]
