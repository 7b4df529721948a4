"""`EncodeAhead`: a writer's encoding (and CPU colour conversion) on a background thread.

``Mp4Writer(encode_ahead=True)`` hands each chunk to this thread through a bounded queue and
returns, so the renderer computes the next chunk meanwhile; the queue's bound keeps at most
`chunks` chunks waiting. It works in front of either sink. An error on the thread is kept and
raised by the caller's next `put`/`check` (the writer's next ``write()`` or ``close()``); after
it, queued chunks are dropped so the caller never blocks on a full queue.
"""
from __future__ import annotations

import queue
import threading

_STOP = object()


class _Aborted(Exception):
    """Stands for "stopped by abort()": queued chunks are dropped, and nothing is raised."""


class EncodeAhead:
    """Runs ``consume(item)`` for each `put` item, in order, on one daemon thread.

    `consume` is held only by the running thread (as the thread's argument), so, as long as the
    thread runs, it keeps its owner alive and no reference cycle outlives `stop()`. `drop(item)`
    is called instead for items that arrive after an error or abort.
    """

    def __init__(self, consume, chunks: int, drop=lambda item: None):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(chunks)))
        self._error: BaseException | None = None
        self._drop = drop
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, args=(consume,), name="sonic-mp4-encoder", daemon=True)
        self._thread.start()

    def put(self, item) -> None:
        """Queue `item`, waiting while the queue is full; raises the thread's error instead."""
        while True:
            self.check()
            if not self._thread.is_alive():
                raise RuntimeError("Mp4Writer encoder thread stopped unexpectedly")
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def check(self) -> None:
        """Raise the error the thread stopped on, if any (not after an abort)."""
        if self._error is not None and not isinstance(self._error, _Aborted):
            err = self._error
            raise err

    def stop(self, discard: bool = False) -> None:
        """Let the thread finish the queued items (`discard`: drop them) and wait for it."""
        if self._thread is None:
            return
        if discard and self._error is None:
            self._error = _Aborted()
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=0.2)
                break
            except queue.Full:
                continue
        self._thread.join()
        self._thread = None

    def _run(self, consume):
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None:
                self._drop(item)
                continue  # drain after a failure so the caller never blocks
            try:
                consume(item)
            except BaseException as e:  # noqa: BLE001 - propagated to the caller's next write()/close()
                self._error = e
