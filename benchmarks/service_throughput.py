"""Job service throughput on one GPU: clips/min for 1 worker x K jobs and 2 workers sharing the GPU,
against warm in-process generate(); queue overhead per job.

    python benchmarks/service_throughput.py --res 1024 --seconds 15 --out results.json

Starts its own redis-server (from PATH) on a loopback port and uses a folder store (the
S3 path is the same code behind `Store`; tests/test_service.py runs it against SeaweedFS).
Each configuration's workers are warmed with one job per slot before timing.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sonic_core.service.client import Client  # noqa: E402
from sonic_core.service.local import Redis, start_worker, stop  # noqa: E402
from tests.speech import shipped_speech  # noqa: E402


def in_process(image, audio, settings, device, n: int) -> dict:
    import sonic_core
    from sonic_core.face import FaceAnalyzer
    from sonic_core.pipeline import resolve_device

    analyzer = FaceAnalyzer(device=resolve_device(device))
    with tempfile.TemporaryDirectory() as tmp:
        sonic_core.generate(image, audio, Path(tmp) / "w.mp4", device=device, analyzer=analyzer, **settings)
        t = time.perf_counter()
        for i in range(n):
            sonic_core.generate(image, audio, Path(tmp) / f"{i}.mp4", device=device, analyzer=analyzer, **settings)
        wall = time.perf_counter() - t
    return {"clips": n, "wall_s": round(wall, 2), "clips_per_min": round(60 * n / wall, 1)}


def wait_all(client, job_ids, procs, logs, timeout: float = 900.0):
    """Wait for the jobs, failing fast (with the workers' log tails) when a worker process dies."""
    def alive():
        for p, log in zip(procs, logs):
            if p.poll() is not None:
                raise RuntimeError(f"worker exited with {p.returncode}:\n{Path(log).read_text(errors='replace')[-3000:]}")

    t_end = time.monotonic() + timeout
    return [client.wait(j, timeout=max(1.0, t_end - time.monotonic()), poll=0.01, check=alive) for j in job_ids]


def run_config(redis_url, store, image, audio, settings, workers: int, jobs: int, n: int, device, log_dir) -> dict:
    client = Client(redis_url, store)
    logs = [log_dir / f"w{workers}x{jobs}-{i}.log" for i in range(workers)]
    procs = [start_worker(redis_url, store, f"b{workers}x{jobs}-{i}", None, logs[i], jobs, device=device)
             for i in range(workers)]
    try:
        warm = [client.submit(image, audio, settings).id for _ in range(workers * jobs)]
        assert all(d.state == "done" for d in wait_all(client, warm, procs, logs, 300))
        t0 = time.time()
        batch = [client.submit(image, audio, settings).id for _ in range(n)]
        done = wait_all(client, batch, procs, logs)
        wall = max(d.finished for d in done) - t0
        assert all(d.state == "done" for d in done), [d.error for d in done]
        render = [d.render_s for d in done]
        return {"workers": workers, "jobs_per_worker": jobs, "clips": n, "wall_s": round(wall, 2),
                "clips_per_min": round(60 * n / wall, 1), "render_s_median": round(float(np.median(render)), 2)}
    finally:
        for p in procs:
            stop(p)


def overhead(redis_url, store, image, audio, settings, device, log_dir, n: int = 5) -> dict:
    """One idle worker, jobs one at a time: submit -> start, and finish -> visible to a polling client."""
    client = Client(redis_url, store)
    log = log_dir / "overhead.log"
    p = start_worker(redis_url, store, "overhead", None, log, 1, device=device)
    try:
        wait_all(client, [client.submit(image, audio, settings).id], [p], [log], 300)
        to_start, after = [], []
        for _ in range(n):
            t = time.time()
            job = client.submit(image, audio, settings)
            submitted = time.time()
            d = wait_all(client, [job.id], [p], [log], 300)[0]
            seen = time.time()
            to_start.append(d.started - submitted)
            after.append(seen - d.started - d.render_s)  # upload + record + polling, beyond the engine
        return {"submit_call_s": round(submitted - t, 3), "submit_to_start_s_median": round(float(np.median(to_start)), 3),
                "beyond_render_s_median": round(float(np.median(after)), 3)}
    finally:
        stop(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--clips", type=int, default=12, help="Timed clips per configuration.")
    ap.add_argument("--configs", default="1x1,1x2,1x4,2x2", help="WORKERSxJOBS, comma-separated.")
    ap.add_argument("--out", default=None)
    ap.add_argument("--logs", default=None, help="Folder for the workers' logs (default: a temporary one).")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sonic-bench-"))
    image, audio = REPO / "assets" / "grace_hopper.jpg", shipped_speech(tmp / "speech.wav", args.seconds)
    settings = {"min_resolution": args.res}
    results = {"res": args.res, "clip_s": args.seconds, "device": args.device}
    results["in_process"] = in_process(image, audio, settings, args.device, max(4, args.clips // 2))
    print("in-process", results["in_process"], flush=True)
    log_dir = Path(args.logs) if args.logs else tmp
    log_dir.mkdir(parents=True, exist_ok=True)
    redis = Redis(tmp / "redis").start()
    store = (tmp / "store").as_uri()
    try:
        results["overhead"] = overhead(redis.url, store, image, audio, settings, args.device, log_dir)
        print("overhead", results["overhead"], flush=True)
        results["service"] = []
        for spec in args.configs.split(","):
            w, k = (int(v) for v in spec.split("x"))
            r = run_config(redis.url, store, image, audio, settings, w, k, args.clips, args.device, log_dir)
            print("service", r, flush=True)
            results["service"].append(r)
    finally:
        redis.stop()
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
