"""medfound.utils.memory: memory freed in a worker thread's heap goes back to the OS."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from medfound.utils.memory import release_free_memory


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim, /proc")
def test_freed_worker_thread_memory_is_returned_to_the_system():
    """What TensorFlow's executor threads leave behind: 120 MB of 64 kB buffers made in a
    worker thread (glibc serves them from that thread's arena), every 16th kept so the freed
    ones sit between live ones, where glibc keeps them resident until malloc_trim."""
    kept: list[bytes] = []

    def work():
        buffers = [b"x" * (64 * 1024) for _ in range(1920)]  # written: resident
        kept.extend(buffers[::16])

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    before = resident_mb()
    if not release_free_memory():
        pytest.skip("this C library has no malloc_trim")
    assert before - resident_mb() > 50, (before, resident_mb())
    assert len(kept) == 120
