"""Feeding an image's feature chunks to all of its outputs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import Executor

from worker.sinks import Sink, SinkWriter


async def write_outputs(
    sinks: list[Sink],
    job_id: str,
    output_name: str,
    chunks: Iterator[list[str]],
    executor: Executor,
) -> tuple[str, ...]:
    """Write every chunk to every sink; on failure abort all outputs and re-raise.

    Chunks are produced on ``executor`` (geolocation and JSON are CPU work), one at a time, so
    memory holds one chunk whatever the number of features.

    Returns:
        Where each output went.
    """
    loop = asyncio.get_running_loop()
    writers: list[SinkWriter] = []
    written = False
    try:
        for sink in sinks:
            writers.append(await sink.open(job_id, output_name))
        while (chunk := await loop.run_in_executor(executor, next, chunks, None)) is not None:
            for writer in writers:
                await writer.write(chunk)
        locations = tuple([await writer.close() for writer in writers])
        written = True
    finally:
        if not written:
            for writer in writers:
                await writer.abort()
    return locations
