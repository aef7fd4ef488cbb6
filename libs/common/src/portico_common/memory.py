"""What a process does once it has started, before it waits for traffic: :func:`settle`.

Everything built during start-up (modules, settings, pools, the server) lives as long as the
process. Two things keep it cheap afterwards:

* :func:`gc.freeze` after a full collection moves it out of the cyclic collector's sight, so
  the collections that per-request garbage triggers stop walking FastAPI's, pydantic's and
  protobuf's start-up objects again and again;
* ``malloc_trim(0)`` (glibc) hands back to the kernel the free pages the start-up left inside
  the C heap: reading a module's code object goes through buffers larger than pymalloc's
  512 bytes, i.e. ``malloc``, and hundreds of imports leave that heap fragmented with pages
  that are free but still resident. glibc only returns the top of its heap by itself (above
  ``M_TRIM_THRESHOLD``); ``malloc_trim`` also releases whole free pages in the middle. Measured
  with ``python -m bench --startup-only``: 6-8 MiB of idle RSS per process
  (docs/benchmarks.md, "Start-up and idle memory"). Nothing in the standard library or a
  maintained package exposes it, hence ``ctypes``; where the C library is not glibc (musl,
  macOS) it is skipped.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        # glibc's soname, loaded by name (ctypes.util.find_library would run ldconfig or a
        # compiler, which the distroless images do not have): already in the process.
        libc = ctypes.CDLL("libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (ImportError, OSError, AttributeError):  # no ctypes, or a C library other than glibc
        return None
    return trim


def settle() -> bool:
    """Collect, freeze what survived, and return the C heap's free pages to the kernel.

    Returns whether the heap was trimmed (False where the C library has no ``malloc_trim``).
    """
    gc.collect()
    gc.freeze()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
