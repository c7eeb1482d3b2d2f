"""Handing memory that TensorFlow freed back to the operating system (glibc ``malloc_trim``)."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim") if name else None
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Returns the C heap's free pages to the operating system; False where that cannot be done.

    TensorFlow's executor threads allocate a graph's tensors from glibc's per-thread arenas;
    once freed they stay resident, and the main thread (tracing, SavedModel writing) cannot
    reuse them, so a large transient (a probe that standardises every kernel at once) would
    add to the peak of whatever comes after it instead of overlapping it.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
