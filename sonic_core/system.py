"""Facts about the machine the engine runs on."""
from __future__ import annotations

import ctypes
import functools
import os


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's share), not the host's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@functools.lru_cache(maxsize=None)
def _malloc_trim():
    """glibc's malloc_trim, or None on other C libraries (musl, macOS, Windows)."""
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # TypeError: Windows' CDLL needs a name
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_free_memory() -> None:
    """Hand memory that is already free back to the OS (glibc only; a no-op elsewhere).

    Long encodes allocate and free the same large buffers (frames, x264 instances) from
    several threads; glibc raises its mmap threshold after such frees and then serves them
    from the heap, where fragmentation keeps freed pages resident, so RSS creeps up with the
    video's length (H100, 1024²: 2.8 GB after 1 minute, 3.2 GB after 10). Trimming after each
    encoded segment returns those pages; it touches no live memory and no allocator setting.
    """
    fn = _malloc_trim()
    if fn is not None:
        fn(0)
