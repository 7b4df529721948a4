"""Facts about the machine the engine runs on."""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading


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
    video's length (measured in the CHANGELOG). Trimming after each
    encoded segment returns those pages; it touches no live memory and no allocator setting.
    """
    fn = _malloc_trim()
    if fn is not None:
        fn(0)


_STABLE = threading.RLock()


@contextlib.contextmanager
def stable_threads():
    """Run torch CPU work with the same number of threads every time, one such block at a time.

    CPU convolutions give (slightly) different results with different thread counts, and the
    count is process-wide: Silero's loader sets it to 1 while it loads, and a caller may change
    it. The face models and the speech detector run inside this block, so the same inputs give
    the same landmarks and the same frames whatever runs beside them (they are short: holding
    the lock costs other jobs little).
    """
    import torch

    with _STABLE:
        before = torch.get_num_threads()
        torch.set_num_threads(STABLE_THREADS)
        try:
            yield
        finally:
            torch.set_num_threads(before)


STABLE_THREADS = max(1, min(usable_cpus(), 8))  # the same on every run on one machine
