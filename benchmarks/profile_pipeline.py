"""Where a warm generate() spends its wall time: a timeline of every stage, phone piece,
rendered chunk, x264 segment and mux, plus a sweep of the parallel-encoder layout.

    python benchmarks/profile_pipeline.py --resolution 1024 --json timeline.json

Part 1 runs generate() three times (after a warm-up) with the writer and the phone decoder
pool instrumented, and prints, for the median run, when each event happened (seconds from
the start of generate) and how busy the CPUs were (process CPU seconds / wall seconds).
Part 2 encodes the same pre-rendered frames with several (x264 instances, frames per
segment, threads per instance) layouts and prints fps and CPU use of each, so the writer's
own limit can be told apart from the pipeline's.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench import IMAGE, make_speech, rendered_chunks  # noqa: E402
from sonic_core import pipeline  # noqa: E402
from sonic_core.audio import phonemes  # noqa: E402
from sonic_core.audio import vad as vad_mod  # noqa: E402
from sonic_core.config import GenerateConfig  # noqa: E402
from sonic_core.face import FaceAnalyzer  # noqa: E402
from sonic_core.models import ensure_face_models  # noqa: E402
from sonic_core.motion import phonetic  # noqa: E402
from sonic_core.video import encoders as encoders_mod  # noqa: E402
from sonic_core.video import segment_sink as segment_sink_mod  # noqa: E402
from sonic_core.video import writer as writer_mod  # noqa: E402
from sonic_core.video.segment_sink import SegmentSink  # noqa: E402
from sonic_core.video.soundtrack import AudioTrack  # noqa: E402

EVENTS: list[tuple[float, str, str]] = []


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def _wrap(owner, name: str, label: str) -> None:
    fn = getattr(owner, name)

    def wrapped(*a, **k):
        EVENTS.append((time.perf_counter(), label + ">", threading.current_thread().name))
        try:
            return fn(*a, **k)
        finally:
            EVENTS.append((time.perf_counter(), label + "<", threading.current_thread().name))

    setattr(owner, name, wrapped)


def instrument() -> None:
    W = writer_mod.Mp4Writer
    for owner, name, label in [(W, "write", "write"), (SegmentSink, "_encode_segment", "segment"),
                               (SegmentSink, "_mux_head", "mux"), (W, "_finish", "finish"), (W, "close", "close"),
                               (AudioTrack, "_run_ahead", "aac")]:
        _wrap(owner, name, label)
    _wrap(writer_mod._Download, "wait", "download_wait")
    _wrap(phonemes, "decode_piece", "phone_piece")
    _wrap(phonemes.PhoneJob, "result", "phone_result")
    _wrap(pipeline, "make_motion", "motion")
    _wrap(vad_mod, "speech_probability", "vad")
    _wrap(phonetic, "acoustic_features", "acoustic")


def summarize(t0: float, events) -> dict:
    """First start / last end of each kind of event, and the spans of phone pieces and segments."""
    out: dict = {}
    for t, label, thread in events:
        kind, edge = label[:-1], label[-1]
        d = out.setdefault(kind, {"n": 0, "first": None, "last": None, "spans": []})
        if edge == ">":
            d["n"] += 1
            d["first"] = round(t - t0, 3) if d["first"] is None else d["first"]
            d["spans"].append([round(t - t0, 3), None, thread])
        else:
            d["last"] = round(t - t0, 3)
            for s in reversed(d["spans"]):
                if s[1] is None and s[2] == thread:
                    s[1] = round(t - t0, 3)
                    break
    return out


class GilProbe:
    """A thread that sleeps 0.5 ms in a loop: how late it wakes up is how long it waited for
    the GIL (or, on a saturated machine, for a core)."""

    def __init__(self):
        self.lat: list[float] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            t = time.perf_counter()
            time.sleep(0.0005)
            self.lat.append(time.perf_counter() - t - 0.0005)

    def stop(self) -> dict:
        self._stop.set()
        self._t.join()
        a = sorted(self.lat) or [0.0]
        return {"mean_ms": round(1000 * sum(a) / len(a), 2), "p90_ms": round(1000 * a[int(0.9 * (len(a) - 1))], 2),
                "max_ms": round(1000 * a[-1], 1)}


class _NoPool:
    """Stands in for the x264 worker pool: every call fails, so segments encode in threads."""

    def warm(self, n):
        pass

    def call(self, parts):
        raise writer_mod.WorkerError("threads variant")


# Variants: changes applied for one series of runs and undone after it.
VARIANTS = {
    "base": {},
    "no_trim": {(segment_sink_mod, "release_free_memory"): lambda: None},
    "seg48": {(writer_mod, "auto_segment_frames"): lambda *a, **k: 48},
    "aac_inline": {(AudioTrack, "start_ahead"): lambda self, n: None},
    "torch_threads_4": "threads4",
    "vad_threads_1": "vad1",
    "x264_threads": {(writer_mod, "warm_pool"): lambda *a, **k: _NoPool()},
    "w12": {(encoders_mod, "auto_workers"): lambda *a, **k: 12},
    "w16": {(encoders_mod, "auto_workers"): lambda *a, **k: 16},
}


def part_generate(res: int, audio: Path, dev, models, analyzer, tmp: Path, runs: int, variant: str = "base") -> list[dict]:
    cfg = GenerateConfig(min_resolution=res).validate()
    change = VARIANTS[variant]
    saved, threads = {}, torch.get_num_threads()
    if change == "threads4":
        torch.set_num_threads(4)
    elif change == "vad1":  # the VAD alone at one torch thread (a global setting: measurement only)
        saved[(vad_mod, "speech_probability")] = inner = vad_mod.speech_probability

        def one_thread(*a, **k):
            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return inner(*a, **k)
            finally:
                torch.set_num_threads(n)
        vad_mod.speech_probability = one_thread
    else:
        for (owner, name), value in change.items():
            saved[(owner, name)] = getattr(owner, name)
            setattr(owner, name, value)
    try:
        pipeline.generate(IMAGE, audio, tmp / "warm.mp4", cfg, device=dev, model_dir=models, analyzer=analyzer)
        rows = []
        for _ in range(runs):
            EVENTS.clear()
            probe = GilProbe()
            c0, t0 = _cpu_seconds(), time.perf_counter()
            r = pipeline.generate(IMAGE, audio, tmp / "e2e.mp4", cfg, device=dev, model_dir=models, analyzer=analyzer)
            wall = time.perf_counter() - t0
            ev = summarize(t0, list(EVENTS))
            writes = [a for a, _, _ in ev.get("write", {}).get("spans", [])]
            rows.append({"variant": variant, "wall": round(wall, 3), "cpu_busy": round((_cpu_seconds() - c0) / wall, 2),
                         "gil_probe": probe.stop(),
                         "render_gaps": [round(b - a, 3) for a, b in zip(writes, writes[1:])],
                         "stages": {k: round(v, 3) for k, v in r.timings.items()}, "events": ev})
        return sorted(rows, key=lambda r: r["wall"])
    finally:
        torch.set_num_threads(threads)
        for (owner, name), value in saved.items():
            setattr(owner, name, value)


def part_writer(res: int, audio: Path, dev, models, analyzer, tmp: Path, layouts) -> list[dict]:
    cfg, clip, chunks = rendered_chunks(res, audio, dev, models, analyzer)
    n = sum(len(c) for c in chunks)
    rows = []
    for workers, seg, threads, procs in layouts:
        best = None
        for _ in range(2):
            EVENTS.clear()
            c0, t0 = _cpu_seconds(), time.perf_counter()
            with writer_mod.Mp4Writer(tmp / "w.mp4", res, res, cfg.fps, audio=clip, crf=cfg.crf, preset=cfg.preset,
                                      workers=workers, segment_frames=seg, threads=threads, total_frames=n,
                                      encode_ahead=True, processes=bool(procs)) as w:
                for c in chunks:
                    w.write(c)
                t_written = time.perf_counter()
            wall = time.perf_counter() - t0
            ev = summarize(t0, list(EVENTS))
            row = {"processes": bool(procs), "workers": workers, "segment_frames": w.segment_frames if workers > 1 else None,
                   "threads": threads, "fps": round(n / wall, 1), "wall": round(wall, 3),
                   "written_at": round(t_written - t0, 3), "cpu_busy": round((_cpu_seconds() - c0) / wall, 2),
                   "mb": round((tmp / "w.mp4").stat().st_size / 1e6, 2),
                   "first_segment": ev.get("segment", {}).get("first"), "finish": ev.get("finish", {}).get("first")}
            best = row if best is None or row["wall"] < best["wall"] else best
        rows.append(best)
        print(f"  {'proc' if procs else 'thrd'} x{workers:<2} seg {str(best['segment_frames']):>4} threads {threads}: {best['fps']:6.1f} fps "
              f"{best['wall']:.3f} s  cpu {best['cpu_busy']:5.2f}  {best['mb']:.2f} MB  "
              f"1st seg {best['first_segment']}  finish at {best['finish']}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--layouts", default="8:0:0:0,8:0:0:1,8:48:0:1,16:0:1:1,12:0:0:1",
                    help="workers:segment_frames:threads:processes, 0 = automatic / threads")
    ap.add_argument("--variants", default="base", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dev = pipeline.resolve_device("auto")
    models = ensure_face_models(None).parent
    analyzer = FaceAnalyzer(model_dir=models, device=dev)
    instrument()
    report: dict = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        audio = tmp / "speech.wav"
        make_speech(args.seconds, audio)
        report["generate"] = []
        for variant in args.variants.split(","):
            rows = part_generate(args.resolution, audio, dev, models, analyzer, tmp, args.runs, variant)
            report["generate"] += rows
            med = rows[len(rows) // 2]
            print(f"generate {args.resolution}² [{variant}]: wall {[r['wall'] for r in rows]}  cpu busy {med['cpu_busy']}  "
                  f"gil probe {med['gil_probe']}  render gaps {med['render_gaps']}")
            print("  stages", med["stages"])
            for kind, d in med["events"].items():
                spans = "" if kind not in ("phone_piece", "segment", "vad", "acoustic") else \
                    " ".join(f"{a}-{b}" for a, b, _ in d["spans"])
                print(f"  {kind:<14} n={d['n']:<3} first {d['first']}  last {d['last']}  {spans}")
        layouts = [tuple(int(v) for v in s.split(":")) for s in args.layouts.split(",") if s]
        if layouts:
            print("writer alone, pre-rendered frames:")
            report["writer"] = part_writer(args.resolution, audio, dev, models, analyzer, tmp, layouts)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
