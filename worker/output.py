"""Feeding an image's feature chunks to all of its outputs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import Executor

from worker.ports import Sink, SinkWriter


async def write_outputs(
    sinks: list[Sink],
    job_id: str,
    output_name: str,
    chunks: Iterator[list[str]],
    executor: Executor,
) -> tuple[str, ...]:
    """Write every chunk to every sink; on failure abort all outputs and re-raise.

    Chunks are produced on ``executor`` (geolocation and JSON are CPU work), the next while the
    outputs take the current one, so memory holds two chunks whatever the number of features.

    Returns:
        Where each output went.
    """
    loop = asyncio.get_running_loop()
    writers: list[SinkWriter] = []
    written = False
    upcoming: asyncio.Future[list[str] | None] | None = None
    try:
        for sink in sinks:
            writers.append(await sink.open(job_id, output_name))
        upcoming = loop.run_in_executor(executor, next, chunks, None)
        while (chunk := await upcoming) is not None:
            # Make the next chunk while the outputs take this one.
            upcoming = loop.run_in_executor(executor, next, chunks, None)
            await asyncio.gather(*(writer.write(chunk) for writer in writers))
        locations = tuple(await asyncio.gather(*(writer.close() for writer in writers)))
        written = True
    finally:
        if not written:
            if upcoming is not None:
                upcoming.cancel()
            for writer in writers:
                await writer.abort()
    return locations
