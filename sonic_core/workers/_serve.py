"""Child side of a warm worker process (see `pool.py`): one request at a time on stdin.

Request: 8-byte little-endian length + payload, which the handler reads from the stream
itself (so a segment of raw video can be encoded frame by frame as it arrives, without a
buffer for all of it). Reply: 8-byte length + status byte (0 ok, 1 error) + payload or
error text; after an error the child exits (the request may be half read). The child exits when stdin closes (its parent is gone)
or after `idle_s` seconds without a request, so an unused engine gives its memory back.
Imports only the standard library: worker scripts run by path and must start fast.
"""
from __future__ import annotations

import os
import struct
import sys
import threading
import time

HEAD = struct.Struct("<Q")


def read_exact(stream, n: int) -> bytes | None:
    """n bytes from a binary stream, or None at end of file."""
    buf = bytearray()
    while len(buf) < n:
        got = stream.read(n - len(buf))
        if not got:
            return None
        buf += got
    return bytes(buf)


def read_into(stream, buf) -> None:
    """Fill the writable buffer `buf` from `stream` (no intermediate copies); EOFError if it ends."""
    view, got = memoryview(buf).cast("B"), 0
    while got < view.nbytes:
        k = stream.readinto(view[got:])
        if not k:
            raise EOFError
        got += k


def _trim_heap():
    """Give freed request buffers back to the OS while idle (glibc only)."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def serve(handle, idle_s: float, prepare=None) -> int:
    """Answer requests with `handle(stream, nbytes, prepared) -> bytes`, which must read exactly
    `nbytes` of payload from `stream`, until stdin closes or nothing comes for `idle_s`.

    `prepare()` runs before each request while the child waits (e.g. loading a model that a
    request must get fresh), so a warm request pays only for its own work. The idle exit is
    a watchdog thread, which works with every OS's pipes; it also ends the child within a
    quarter second of its parent's death.
    """
    src, dst = sys.stdin.buffer, sys.stdout.buffer
    state = {"busy": False, "since": time.monotonic()}
    parent = os.getppid()

    def watchdog():
        # A parent killed outright (SIGKILL) cannot close our stdin in time: a busy child would
        # finish its request first (seconds). Its parent id changing says at once that it is gone.
        while True:
            time.sleep(0.25)
            if os.getppid() != parent:
                os._exit(0)
            if not state["busy"] and time.monotonic() - state["since"] > idle_s:
                os._exit(0)

    threading.Thread(target=watchdog, daemon=True).start()
    while True:
        prepared = prepare() if prepare is not None else None
        state["since"] = time.monotonic()
        head = read_exact(src, HEAD.size)
        if head is None:
            return 0
        state["busy"] = True
        try:
            status, body = b"\x00", handle(src, HEAD.unpack(head)[0], prepared)
        except EOFError:
            return 0
        except Exception as e:  # reported to the parent, which raises it there
            status, body = b"\x01", f"{type(e).__name__}: {e}".encode(errors="replace")
        dst.write(HEAD.pack(len(body) + 1) + status)
        dst.write(body)
        dst.flush()
        if status != b"\x00":
            return 1
        del body
        _trim_heap()
        state["busy"], state["since"] = False, time.monotonic()
