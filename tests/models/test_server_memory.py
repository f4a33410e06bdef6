"""The model servers' allocator setting: freed arrays are reused, not faulted in again."""

import platform
import subprocess
import sys

import pytest

from models.http import keep_freed_memory

# A handler thread that, as a request does, holds several arrays at once (here six of 4 MiB)
# and frees them; prints the thread's minor page faults over 20 such requests.
FAULTS = """
import resource, sys, threading
import numpy as np
from models.http import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def handle():
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(20):
        arrays = [np.ones(1024 * 1024, dtype=np.float32) for _ in range(6)]
        del arrays
    print(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
thread = threading.Thread(target=handle)
thread.start()
thread.join()
"""


def page_faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_arrays_are_reused_instead_of_faulted_in_again() -> None:
    assert keep_freed_memory()
    default, kept = page_faults("default"), page_faults("keep")
    # By default the thread's heap is trimmed after most requests, and its pages are faulted
    # in anew (up to 20 x 6 x 1024); kept, the first request's pages are reused.
    assert default > 5 * 6 * 1024
    assert kept < default / 5
