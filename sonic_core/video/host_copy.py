"""Frames on their way to host memory, and when the writer must copy the caller's frames.

GPU frames are converted to yuv420p on their device (colour.py) and only those 1.5 bytes/pixel
cross to the host, through a `PinnedRing` of page-locked buffers; the copy is asynchronous
(a `Download`) and is waited for only by the thread that encodes it. CPU frames are used in
place unless `may_alias` says they may be the caller's memory and the encoder keeps them after
`write()` returns; then they are copied, so the caller may reuse its buffer at once.
"""
from __future__ import annotations

import logging
import queue

import numpy as np
import torch

log = logging.getLogger(__name__)


class PinnedRing:
    """A fixed few page-locked host buffers that carry rendered chunks off the GPU, reused chunk
    after chunk.

    A pageable copy of a chunk is slow and serial on the thread that also drives the renderer;
    into pinned memory it is many times faster and need not block at all: `write()` returns at
    once, the renderer queues the next chunk, and the encoder thread waits on the copy's event
    only when it needs the pixels. It then copies them out to ordinary memory (GIL released)
    and hands the buffer back, so pinned memory is `slots` chunks whatever the clip's length.
    (Holding the pinned chunks until their last frame was encoded let torch's caching host
    allocator grow with the clip; the CHANGELOG has the numbers.)
    """

    def __init__(self, slots: int):
        self._free: queue.Queue = queue.Queue()
        for _ in range(slots):
            self._free.put(None)  # allocated on first use, sized to the chunk

    def download(self, src: torch.Tensor, check):
        """Start copying `src` (CUDA) into a free buffer: a `Download`, or a numpy array where
        no pinned memory can be had. `check()` runs while no buffer is free (it raises the
        encoder thread's error instead of waiting forever)."""
        while True:
            try:
                buf = self._free.get(timeout=0.2)
                break
            except queue.Empty:
                check()
        try:
            if buf is None or buf.numel() < src.numel():
                buf = None  # what goes back to the ring if the allocation below fails
                buf = torch.empty(src.numel(), dtype=src.dtype, pin_memory=True)
            return Download(self, buf, src)
        except RuntimeError as e:
            log.debug("pinned host copy unavailable (%s)", e)
            self._free.put(buf)
            return src.cpu().numpy()

    def give_back(self, buf) -> None:
        self._free.put(buf)


class Download:
    """One chunk's device -> host copy in flight into a `PinnedRing` buffer."""

    def __init__(self, ring: PinnedRing, buf: torch.Tensor, src: torch.Tensor):
        self.ring, self.buf = ring, buf
        self.view = buf[:src.numel()].view(src.shape)
        self.view.copy_(src, non_blocking=True)
        self.ready = torch.cuda.Event()
        self.ready.record()

    def wait(self) -> np.ndarray:
        """The pixels in ordinary memory; the pinned buffer goes back to the ring at once."""
        self.ready.synchronize()
        out = self.view.numpy().copy()
        self.release()
        return out

    def release(self) -> None:
        if self.buf is not None:
            self.ready.synchronize()  # the copy must finish before the buffer is reused
            self.ring.give_back(self.buf)
            self.buf = self.view = None


def host_rows(data) -> np.ndarray:
    """A chunk's frames in host memory: waits for a `Download`, passes arrays through."""
    return data.wait() if isinstance(data, Download) else data


def release(data) -> None:
    """Drop a chunk that will not be encoded; a `Download` hands its pinned buffer back."""
    if isinstance(data, Download):
        data.release()


def may_alias(original, tensor: torch.Tensor, arr: np.ndarray) -> bool:
    """True when `arr` may be memory the caller still owns (so the worker must get a copy)."""
    if isinstance(original, np.ndarray):
        return np.may_share_memory(original, arr)
    if isinstance(original, torch.Tensor):
        return arr.ctypes.data == tensor.data_ptr() and original.device.type == "cpu" and original.dtype == torch.uint8
    return False
