"""Parent side of warm worker processes: started on demand, reused between jobs.

Why processes: work done in threads of the engine's process competes with the renderer for
the GIL. The renderer issues ~2000 small torch calls per chunk and each one gives the GIL up
and takes it back; on an H100 host it rendered 1024² frames at 1280/s alone, 102/s beside
8 x264 threads and 980/s beside 8 x264 processes (benchmarks/contention.py). pocketsphinx
holds the GIL for its whole search.

Why warm: a fresh child costs an interpreter start and its imports (and for pocketsphinx a
0.1 s model load) before it does anything, a large share of a warm 15 s job. Children are
started when a request finds none idle (so concurrent jobs never wait for one another),
handed back after each request, and up to `keep` stay idle for the next job; each exits by
itself after `idle_s` without work, and all are closed at interpreter exit.
"""
from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
import time

from ..system import usable_cpus
from ._serve import HEAD, read_exact

IDLE_S = 300.0  # a warm child exits after this long without work
TIMEOUT_S = 600.0  # one request; a hung child must not hang the job


class WorkerError(RuntimeError):
    """A worker process could not answer (it could not start, died, or its work failed)."""


def child_env() -> dict:
    """The parent's import path, so a child run by path finds the same packages (av, pocketsphinx)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))


class _Child:
    def __init__(self, script: str, idle_s: float):
        try:
            self.proc = subprocess.Popen([sys.executable, "-u", script, "--serve", repr(float(idle_s))],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         env=child_env())
        except (OSError, ValueError) as e:
            raise WorkerError(f"cannot start {os.path.basename(script)}: {e}") from None
        self.idle_s = idle_s
        self.last_used = time.monotonic()

    def fresh(self) -> bool:
        """Alive, and far enough from its idle exit that a request will not race it."""
        return self.proc.poll() is None and time.monotonic() - self.last_used < 0.8 * self.idle_s

    def call(self, parts) -> tuple[bool, bytes]:
        """Send the concatenation of `parts` (bytes-like, written without joining them)."""
        timer = threading.Timer(TIMEOUT_S, self.proc.kill)
        timer.start()
        try:
            views = [memoryview(p).cast("B") for p in parts]
            w = self.proc.stdin
            w.write(HEAD.pack(sum(v.nbytes for v in views)))
            for v in views:
                w.write(v)  # large writes go straight to the pipe, with the GIL released
            w.flush()
            head = read_exact(self.proc.stdout, HEAD.size)
            reply = head and read_exact(self.proc.stdout, HEAD.unpack(head)[0])
        finally:
            timer.cancel()
        if not reply:
            raise OSError(f"worker exited (code {self.proc.poll()})")
        self.last_used = time.monotonic()
        return reply[:1] == b"\x00", reply[1:]

    def close(self, kill: bool = False):
        self.hang_up(kill)
        self.reap()

    def hang_up(self, kill: bool = False):
        """Ask the child to exit (its read sees end of file), or kill it."""
        if kill:
            self.proc.kill()
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def reap(self):
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class WarmPool:
    """Children running `script --serve IDLE_S` (a `_serve.serve` loop), shared by all jobs."""

    def __init__(self, script: str, keep: int, idle_s: float = IDLE_S, limit: int = 0):
        self.script, self.keep, self.idle_s = script, int(keep), float(idle_s)
        # At most `limit` children at once (0: twice the CPUs): concurrent jobs beyond that
        # wait for a free child instead of starting processes that would only share the cores.
        self.limit = int(limit) or 2 * usable_cpus()
        self.pid = os.getpid()  # children and pipes belong to this process, not to a fork of it
        self._idle: list[_Child] = []
        self._live = 0  # children started and not yet closed
        self._lock = threading.Condition()
        atexit.register(self.close)

    def call(self, parts) -> bytes:
        """One request to an idle (or new) child; raises WorkerError if it cannot be answered."""
        child = self._acquire()
        try:
            ok, reply = child.call(parts)
        except (OSError, ValueError) as e:  # died or was killed mid-request: never reused
            child.close(kill=True)
            self._forget()
            raise WorkerError(f"{os.path.basename(self.script)}: {e}") from None
        if not ok:  # the child exits after a failed request
            child.close()
            self._forget()
            raise WorkerError(f"{os.path.basename(self.script)}: {reply.decode(errors='replace')}")
        self._release(child)
        return reply

    def warm(self, n: int) -> None:
        """Start children until `n` are idle (capped at `keep`), without waiting for them to load."""
        with self._lock:
            missing = min(min(n, self.keep) - len(self._idle), self.limit - self._live)
            self._live += max(0, missing)
        for _ in range(max(0, missing)):
            try:
                child = _Child(self.script, self.idle_s)
            except WorkerError:
                self._forget()
                continue
            self._release(child)

    def _acquire(self) -> _Child:
        stale, child = [], None
        with self._lock:
            while child is None:
                while self._idle and child is None:
                    c = self._idle.pop()
                    if c.fresh():
                        child = c
                    else:
                        stale.append(c)
                        self._live -= 1
                if child is None and self._live < self.limit:
                    self._live += 1
                    break
                if child is None:
                    self._lock.wait()
        for c in stale:
            c.close()
        if child is None:
            try:
                child = _Child(self.script, self.idle_s)
            except WorkerError:
                self._forget()
                raise
        return child

    def _forget(self):
        """A child slot is free again (its child was closed or never started)."""
        with self._lock:
            self._live -= 1
            self._lock.notify()

    def _release(self, child: _Child):
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(child)
                self._lock.notify()
                return
        child.close()
        self._forget()

    def close(self):
        with self._lock:
            idle, self._idle = self._idle, []
            self._live -= len(idle)
        if os.getpid() == self.pid:  # all told first, then waited for: they exit in parallel
            for c in idle:
                c.hang_up()
            for c in idle:
                c.reap()


_pools: dict[tuple[int, str], WarmPool] = {}
_pools_lock = threading.Lock()


def warm_pool(script: str, keep: int) -> WarmPool:
    """This process's pool for `script`, created on first use (importing starts nothing); a
    forked process gets its own, since writing into its parent's children would mix requests."""
    pid = os.getpid()
    with _pools_lock:
        for key in [k for k in _pools if k[0] != pid]:
            del _pools[key]
        pool = _pools.get((pid, script))
        if pool is None:
            pool = _pools[(pid, script)] = WarmPool(script, keep)
        pool.keep = max(pool.keep, int(keep))
        return pool
