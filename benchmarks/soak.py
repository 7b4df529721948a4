"""Soak: many `generate()` calls in one process; memory, files, threads and helper processes stay flat.

    python benchmarks/soak.py [--calls 100] [--res 128] [--seconds 2]

Each call renders the shipped portrait with a few seconds of the shipped speech into a fresh
MP4 in one temporary folder (deleted as it goes). After a warm-up of 10 calls the process's
resident memory (RSS), open file descriptors, threads and child processes (warm x264 and phone
helpers) are printed every 10 calls, with their growth since the warm-up; the run fails (exit 1)
if RSS grew by more than 100 MB or any count grew at all. Linux (/proc).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def sample() -> dict:
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    fds = len(os.listdir("/proc/self/fd"))
    me = os.getpid()
    children = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    children += int(f.read().rsplit(")", 1)[1].split()[1]) == me
            except (OSError, ValueError, IndexError):
                pass
    return dict(rss_mb=rss, fds=fds, threads=threading.active_count(), children=children)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--res", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--warmup", type=int, default=10)
    args = ap.parse_args()
    import sonic_core

    face, speech = REPO / "assets" / "grace_hopper.jpg", REPO / "assets" / "speech.wav"
    base = None
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(1, args.calls + 1):
            out = os.path.join(tmp, f"soak{k % 3}.mp4")
            sonic_core.generate(face, speech, out, min_resolution=args.res, duration=args.seconds, seed=k)
            if k == args.warmup:
                base = sample()
                print(f"after {k} calls (warm): " + ", ".join(f"{n} {v:.0f}" for n, v in base.items()))
            elif base is not None and k % 10 == 0:
                s = sample()
                print(f"after {k} calls: " + ", ".join(f"{n} {v:.0f} ({v - base[n]:+.0f})" for n, v in s.items())
                      + f", {time.perf_counter() - t0:.0f} s")
    end = sample()
    grew = {n: end[n] - base[n] for n in end}
    ok = grew["rss_mb"] <= 100 and all(grew[n] <= 0 for n in ("fds", "threads", "children"))
    print(("flat" if ok else "GREW") + ": " + ", ".join(f"{n} {v:+.0f}" for n, v in grew.items()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
