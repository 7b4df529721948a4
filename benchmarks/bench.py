"""Speed and scale of the engine, end to end (audio file in -> finished MP4 on disk).

    python benchmarks/bench.py --set gpu --json gpu.json     # one GPU: stages, encoders, jobs, memory
    python benchmarks/bench.py --set cpu --json cpu.json     # 2 CPU threads, like CI

What it prints:
* per-stage table for 15 s of speech at 512² and 1024², warm (models loaded, in-process, as
  inside a running ComfyUI) and cold (a fresh `python -m sonic_core generate` process, model
  files already cached), with the render stage alone in frames/s;
* where a cold start spends its time (interpreter + imports, model load, first CUDA work);
* encoder sweep (GPU set): libx264 instances in parallel x preset, fps and file size;
* concurrency (GPU set): 1, 2, 4, 8 jobs at once in threads of one process, clips per minute;
* memory: peak RSS and peak VRAM of a short and a long clip, each in a fresh process.
The speech is the shipped example repeated to the requested length.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sonic_core.audio import load_audio  # noqa: E402
from sonic_core.audio.features import analyze_speech, frame_count  # noqa: E402
from sonic_core.config import GenerateConfig  # noqa: E402
from sonic_core.face import FaceAnalyzer  # noqa: E402
from sonic_core.models import ensure_face_models  # noqa: E402
from sonic_core.pipeline import Animator, generate, make_motion, prepare_portrait  # noqa: E402
from sonic_core.video.writer import _X264_SCRIPT, Mp4Writer, choose_encoder  # noqa: E402
from sonic_core.workers.pool import warm_pool  # noqa: E402

IMAGE = REPO / "assets" / "grace_hopper.jpg"


def make_speech(seconds: float, path: Path) -> None:
    clip = load_audio(REPO / "assets" / "speech.wav", mono=True)
    reps = int(np.ceil(seconds * clip.sample_rate / clip.samples.shape[1]))
    x = np.tile(clip.samples[0], reps)[: int(seconds * clip.sample_rate)]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(clip.sample_rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t


def cold_run(audio: Path, out: Path, res: int, device: torch.device, models_dir) -> dict:
    """A fresh process, as a user's first command; its own summary gives the stage split."""
    env = dict(os.environ, SONIC_MODELS_DIR=str(models_dir))
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sonic_core", "generate", "--image", str(IMAGE), "--audio", str(audio),
         "--out", str(out), "--min-resolution", str(res), "--device", str(device), "-q"],
        check=True, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sonic_core.pipeline, sonic_core.face, sonic_core.video, torch"],
                   check=True, cwd=REPO, env=env, capture_output=True)
    imports = time.perf_counter() - t
    split = subprocess.run([sys.executable, "-c", _COLD_SPLIT, str(IMAGE), str(audio), str(out) + ".split.mp4",
                            str(res), str(device), str(models_dir)], check=True, cwd=REPO, env=env,
                           capture_output=True, text=True)
    return {"end_to_end_cold": wall, "cold_python_and_imports": imports, "cold_summary": proc.stdout.strip(),
            "cold_split": json.loads(split.stdout.strip().splitlines()[-1])}


# Where a fresh process spends its time: interpreter, torch import, engine imports, CUDA
# context, then the first generate() (model loads and first kernels fall in its stages).
_COLD_SPLIT = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import sonic_core.pipeline, sonic_core.face, sonic_core.video
t2 = time.perf_counter()
dev = sys.argv[5]
if dev.startswith("cuda"):
    torch.zeros(1, device=dev); torch.cuda.synchronize()
t3 = time.perf_counter()
r = sonic_core.pipeline.generate(sys.argv[1], sys.argv[2], sys.argv[3], min_resolution=int(sys.argv[4]),
                                 device=dev, model_dir=sys.argv[6])
t4 = time.perf_counter()
print(json.dumps({"import_torch": t1 - t0, "import_engine": t2 - t1, "cuda_init": t3 - t2,
                  "first_generate": t4 - t3, "stages": {k: round(v, 3) for k, v in r.timings.items()}}))
"""


def bench_stages(res: int, audio: Path, device: torch.device, models_dir, analyzer, tmp: Path) -> dict:
    cfg = GenerateConfig(min_resolution=res).validate()
    row: dict = {"resolution": res}
    clip, row["decode"] = timed(lambda: load_audio(audio), device)
    n = frame_count(clip.duration, cfg.fps)
    speech, row["speech"] = timed(lambda: analyze_speech(clip.mono(), clip.sample_rate, cfg.fps, n), device)
    (portrait, crop, lm), row["face"] = timed(lambda: prepare_portrait(IMAGE, cfg, analyzer), device)
    track, row["motion"] = timed(lambda: make_motion(speech, cfg), device)
    animator, row["rig_setup"] = timed(lambda: Animator(portrait, crop, lm, cfg, device, models_dir), device)
    animator.render(track, 0, min(animator.batch, n))  # warm-up (kernels, allocator)
    chunks = []

    def render_all():
        chunks.extend(frames for _, _, frames in animator.chunks(track))

    _, row["render"] = timed(render_all, device)
    row["render_fps"] = n / row["render"]
    codec, workers = choose_encoder(res, res, cfg.encoder, cfg.encode_workers)
    row["encoder"] = f"{codec} x{workers}"

    def encode_all():
        with Mp4Writer(tmp / f"enc_{res}.mp4", res, res, cfg.fps, audio=clip, crf=cfg.crf, preset=cfg.preset,
                       codec=codec, workers=workers, total_frames=n, encode_ahead=True) as w:
            for c in chunks:
                w.write(c)

    _, row["encode_mux"] = timed(encode_all, device)
    row["encode_fps"] = n / row["encode_mux"]
    chunks.clear()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # Median of three warm runs: one run on a shared 16-core host varies by +-10 %.
    runs = sorted((timed(lambda: generate(IMAGE, audio, tmp / f"e2e_{res}.mp4", cfg, device=device,
                                          model_dir=models_dir, analyzer=analyzer), device) for _ in range(3)),
                  key=lambda r: r[1])
    result, row["end_to_end_warm"] = runs[1]
    row["end_to_end_warm_min"] = runs[0][1]
    row["e2e_stages"] = {k: round(v, 3) for k, v in result.timings.items()}
    if device.type == "cuda":
        row["peak_vram_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    row["frames"] = n
    row["audio_s"] = clip.duration
    row["realtime_factor"] = clip.duration / row["end_to_end_warm"]
    row.update(cold_run(audio, tmp / f"cold_{res}.mp4", res, device, models_dir))
    return row


def rendered_chunks(res: int, audio: Path, device: torch.device, models_dir, analyzer):
    """(config, clip, chunks): the whole clip rendered ahead, as the renderer hands it to the
    writer, so an encoder can be timed alone."""
    cfg = GenerateConfig(min_resolution=res).validate()
    clip = load_audio(audio)
    speech = analyze_speech(clip.mono(), clip.sample_rate, cfg.fps, frame_count(clip.duration, cfg.fps))
    portrait, crop, lm = prepare_portrait(IMAGE, cfg, analyzer)
    animator = Animator(portrait, crop, lm, cfg, device, models_dir)
    return cfg, clip, [frames for _, _, frames in animator.chunks(make_motion(speech, cfg))]


def bench_encoders(res: int, audio: Path, device: torch.device, models_dir, analyzer, tmp: Path,
                   workers_list, presets) -> list[dict]:
    """Encode the same rendered frames with each (parallel instances, preset): fps and MB."""
    cfg, clip, chunks = rendered_chunks(res, audio, device, models_dir, analyzer)
    n = sum(len(c) for c in chunks)
    rows = []
    for preset in presets:
        for workers in workers_list:
            if workers > 1:  # x264 worker processes started and loaded, as in a running server
                warm_pool(_X264_SCRIPT, keep=workers).warm(workers)
                time.sleep(1.0)
            out = tmp / f"sweep_{preset}_{workers}.mp4"
            _, dt = timed(lambda: _encode(out, res, cfg.fps, clip, chunks, preset, workers), device)
            rows.append({"preset": preset, "workers": workers, "fps": n / dt, "seconds": dt,
                         "mb": out.stat().st_size / 1e6})
            out.unlink()
    return rows


def _encode(out, res, fps, clip, chunks, preset, workers):
    with Mp4Writer(out, res, res, fps, audio=clip, crf=18, preset=preset, workers=workers,
                   total_frames=sum(len(c) for c in chunks), encode_ahead=True) as w:
        for c in chunks:
            w.write(c)


def bench_concurrency(res: int, audio: Path, device: torch.device, models_dir, analyzer, tmp: Path,
                      jobs_list) -> list[dict]:
    """N generate() calls at once in threads of one process (a server taking several requests)."""
    cfg = GenerateConfig(min_resolution=res).validate()
    rows = []
    for jobs in jobs_list:
        errors: list[BaseException] = []

        def job(k: int):
            try:
                generate(IMAGE, audio, tmp / f"job{jobs}_{k}.mp4", cfg, device=device, model_dir=models_dir,
                         analyzer=analyzer)
            except BaseException as e:  # reported in the table, not swallowed
                errors.append(e)

        threads = [threading.Thread(target=job, args=(k,)) for k in range(jobs)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        dt = time.perf_counter() - t
        rows.append({"jobs": jobs, "wall_s": dt, "clips_per_min": 60.0 * jobs / dt, "errors": [repr(e) for e in errors]})
    return rows


def memory_child(seconds: float, res: int, device: str, models_dir: str, out: str, encode_workers: int = 0) -> None:
    """Runs in a fresh process: one clip, then prints peak RSS / VRAM as JSON, with a sampled
    timeline that says in which stage the peak falls and what it is made of."""
    if device.startswith("cuda"):
        torch.zeros(1, device=device)  # CUDA context + libraries: the floor any CUDA process pays
    base = _rss_now_gb()
    timeline = MemoryTimeline()
    with tempfile.TemporaryDirectory() as d:
        audio = Path(d) / "speech.wav"
        make_speech(seconds, audio)
        t = time.perf_counter()
        timeline.start()
        generate(IMAGE, audio, out, GenerateConfig(min_resolution=res, encode_workers=encode_workers), device=device,
                 model_dir=models_dir, progress=timeline.progress)
        wall = time.perf_counter() - t
        timeline.stop()
    rss = _peak_rss_gb()
    workers = _workers_peak_rss_gb()
    vram = torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else 0.0
    print(json.dumps({"seconds": seconds, "resolution": res, "encode_workers": encode_workers, "peak_rss_gb": rss, "workers_peak_rss_gb": workers,
                      "total_peak_rss_gb": rss + workers, "peak_vram_gb": vram, "wall_s": wall,
                      "rss_after_torch_init_gb": base, **_rss_split_gb(), **timeline.summary()}))


class MemoryTimeline:
    """Samples this process's resident memory (anonymous / file-backed / shared, the last being
    mostly page-locked buffers) and its worker children's every 30 ms, and tags each sample with
    the pipeline stage running at the time, so a peak can be traced to what causes it. The
    children's sum at one instant is their real joint footprint (the sum of their separate
    peaks, `workers_peak_rss_gb`, is an upper bound)."""

    STAGES = ("prepare_audio", "make_motion", "prepare_portrait", "Animator")

    def __init__(self, interval: float = 0.03):
        import sonic_core.pipeline as pl
        self._pl, self.interval, self.samples, self.stage = pl, interval, [], "start"
        self._saved = {name: getattr(pl, name) for name in self.STAGES}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tagged(self, name, fn):
        def run(*a, **k):
            on_main = threading.current_thread() is threading.main_thread()
            if on_main:
                self.stage = name
            try:
                return fn(*a, **k)
            finally:
                if not on_main:  # the motion model on its own thread: one sample as it ends
                    self.samples.append((time.perf_counter(), "motion done", *self._read()))
        return run

    def progress(self, done: int, total: int) -> None:
        self.stage = "render+encode"

    def start(self) -> None:
        for name, fn in self._saved.items():
            setattr(self._pl, name, self._tagged(name, fn))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for name, fn in self._saved.items():
            setattr(self._pl, name, fn)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append((time.perf_counter(), self.stage, *self._read()))

    @staticmethod
    def _read() -> tuple[float, float, float, float, float]:
        """(anon, file, shmem) resident GB of this process, resident GB of its children, and the
        proportional set size (PSS) of this process and its children together: pages shared
        between processes (the helpers' libraries) counted once, the true footprint."""
        me = _proc_gb("self", "status", *_RSS_KEYS)
        kids, pss = 0.0, _proc_gb("self", "smaps_rollup", "Pss").get("Pss", 0.0)
        for p in _child_pids():
            kids += _proc_gb(p, "status", "VmRSS").get("VmRSS", 0.0)
            pss += _proc_gb(p, "smaps_rollup", "Pss").get("Pss", 0.0)
        return (*(me.get(k, 0.0) for k in _RSS_KEYS), kids, pss)

    def summary(self) -> dict:
        if not self.samples:
            return {}
        own = lambda r: r[2] + r[3] + r[4]  # noqa: E731 - this process's resident GB in a sample
        _, stage, anon, file, shm, kids, _ = max(self.samples, key=own)
        per_stage: dict = {}
        for r in self.samples:
            per_stage[r[1]] = round(max(per_stage.get(r[1], 0.0), own(r)), 3)
        return {"peak_stage": stage, "peak_split_gb": {"anon": round(anon, 3), "file": round(file, 3), "shmem": round(shm, 3),
                                                       "workers_now": round(kids, 3)},
                "joint_peak_gb": round(max(own(r) + r[5] for r in self.samples), 3),
                "joint_peak_pss_gb": round(max(r[6] for r in self.samples), 3), "stage_peaks_gb": per_stage}


_RSS_KEYS = ("RssAnon", "RssFile", "RssShmem")


def _proc_gb(pid: str, name: str, *keys: str) -> dict[str, float]:
    """`Key: N kB` fields of /proc/PID/NAME (status, smaps_rollup) in GB; {} if it is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key in keys:
                    out[key] = int(val.split()[0]) / 1e6
    except OSError:
        pass
    return out


def _peak_rss_gb() -> float:
    """This process's peak resident set (VmHWM). Not getrusage's ru_maxrss: on Linux that keeps
    the parent's high-water mark across fork+exec, so a child of a big process reports the parent."""
    return _proc_gb("self", "status", "VmHWM").get("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _workers_peak_rss_gb() -> float:
    """Sum of the peak resident sets of this process's warm worker children (x264 segments,
    phone decoders), which stay alive after the job: an upper bound of their joint peak."""
    return sum(_proc_gb(pid, "status", "VmHWM").get("VmHWM", 0.0) for pid in _child_pids())


def _child_pids() -> list[str]:
    """This process's child processes (the warm x264 and phone-decoder helpers)."""
    me, out = str(os.getpid()), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[1] == me:
                    out.append(pid)
        except OSError:
            continue
    return out


def _rss_split_gb() -> dict:
    """Resident memory now, split into anonymous (the process's own data) and file-backed pages
    (shared libraries such as cuDNN/cuBLAS kernels, clean and shared between processes)."""
    return {f"end_{k.lower()}_gb": v for k, v in _proc_gb("self", "status", *_RSS_KEYS).items()}


def _rss_now_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def bench_memory(durations, res: int, device: torch.device, models_dir, tmp: Path, encode_workers: int = 0) -> list[dict]:
    rows = []
    for s in durations:
        proc = subprocess.run([sys.executable, __file__, "--memory-child", str(s), str(res), str(device),
                               str(models_dir), str(tmp / f"mem_{s}.mp4"), str(encode_workers)],
                              check=True, capture_output=True, text=True, cwd=REPO)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=["gpu", "cpu"], default="gpu")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--resolutions", type=int, nargs="+", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (cpu set: 2)")
    ap.add_argument("--models-dir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--skip", nargs="*", default=[], choices=["stages", "encoders", "jobs", "memory"])
    ap.add_argument("--memory-seconds", type=float, nargs="+", default=[60.0, 600.0])
    ap.add_argument("--memory-encode-workers", type=int, default=0,
                    help="x264 instances for the memory clips (0 = automatic); fewer hold fewer frames")
    ap.add_argument("--memory-child", nargs=6, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        s, res, dev, md, out, ew = args.memory_child
        if dev == "cpu":
            torch.set_num_threads(int(os.environ.get("SONIC_BENCH_THREADS", "2")))
        memory_child(float(s), int(res), dev, md, out, int(ew))
        return
    gpu = args.set == "gpu"
    device = torch.device("cuda" if gpu else "cpu")
    threads = args.threads or (0 if gpu else 2)
    if threads:
        torch.set_num_threads(threads)
        os.environ["SONIC_BENCH_THREADS"] = str(threads)
    resolutions = args.resolutions or [512, 1024]
    models_dir = ensure_face_models(args.models_dir).parent
    analyzer = FaceAnalyzer(model_dir=models_dir, device=device)
    name = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} torch threads"
    report: dict = {"device": name, "torch": torch.__version__, "cpus": os.cpu_count(), "seconds": args.seconds}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        audio = tmp / "speech.wav"
        make_speech(args.seconds, audio)
        prepare_portrait(IMAGE, GenerateConfig(min_resolution=256).validate(), analyzer)  # warm the face models
        if "stages" not in args.skip:
            report["stages"] = [bench_stages(r, audio, device, models_dir, analyzer, tmp) for r in resolutions]
            print_stages(report)
        if gpu and "encoders" not in args.skip:
            report["encoders"] = bench_encoders(max(resolutions), audio, device, models_dir, analyzer, tmp,
                                                [1, 4, 8, 12], ["auto", "veryfast", "superfast", "ultrafast"])
            print(f"\nencoder sweep at {max(resolutions)}² ({args.seconds:g} s):")
            for r in report["encoders"]:
                print(f"  libx264 {r['preset']:<10} x{r['workers']}: {r['fps']:7.1f} fps  {r['mb']:6.2f} MB")
        if gpu and "jobs" not in args.skip:
            report["jobs"] = bench_concurrency(max(resolutions), audio, device, models_dir, analyzer, tmp, [1, 2, 4, 8])
            print(f"\nconcurrent jobs at {max(resolutions)}² ({args.seconds:g} s each):")
            for r in report["jobs"]:
                print(f"  {r['jobs']} jobs: {r['wall_s']:6.2f} s  {r['clips_per_min']:6.1f} clips/min  errors: {r['errors'] or 'none'}")
        if "memory" not in args.skip:
            res = max(resolutions) if gpu else min(resolutions)  # CPU: 10 min at 1024² would take ~20 min
            report["memory"] = bench_memory(args.memory_seconds, res, device, models_dir, tmp, args.memory_encode_workers)
            print(f"\nmemory at {res}² (fresh process per clip, encode workers {args.memory_encode_workers or 'auto'}):")
            for r in report["memory"]:
                print(f"  {r['seconds']:6.0f} s audio: peak RSS {r['peak_rss_gb']:.2f} GB (of which torch/CUDA "
                      f"start-up {r['rss_after_torch_init_gb']:.2f} GB), peak VRAM {r['peak_vram_gb']:.2f} GB, "
                      f"{r['wall_s']:.1f} s; at the end: anonymous {r.get('end_rssanon_gb', 0):.2f} GB, "
                      f"file-backed {r.get('end_rssfile_gb', 0):.2f} GB; worker processes' peaks add "
                      f"{r['workers_peak_rss_gb']:.2f} GB (total {r['total_peak_rss_gb']:.2f} GB)")
                if "peak_stage" in r:
                    print(f"    peak during {r['peak_stage']}: {r['peak_split_gb']}; engine + workers at one instant "
                          f"{r['joint_peak_gb']:.2f} GB resident, {r['joint_peak_pss_gb']:.2f} GB proportional (shared "
                          f"pages once); per stage {r['stage_peaks_gb']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def print_stages(report: dict) -> None:
    rows = report["stages"]
    print(f"\nSonic engine, {report['seconds']:g} s of speech, 25 fps, device: {report['device']}, torch {report['torch']}")
    print(f"{'stage (s)':<24}" + "".join(f"{r['resolution']:>10}²" for r in rows))
    for k in ["decode", "speech", "face", "motion", "rig_setup", "render", "encode_mux", "end_to_end_warm", "end_to_end_warm_min",
              "end_to_end_cold", "cold_python_and_imports"]:
        print(f"{k:<24}" + "".join(f"{r[k]:>11.3f}" for r in rows))
    for k in ("render_fps", "encode_fps", "realtime_factor"):
        print(f"{k:<24}" + "".join(f"{r[k]:>11.1f}" for r in rows))
    print(f"{'encoder':<24}" + "".join(f"{r['encoder']:>11}" for r in rows))
    if "peak_vram_gb" in rows[0]:
        print(f"{'peak_vram_gb':<24}" + "".join(f"{r['peak_vram_gb']:>11.2f}" for r in rows))
    for r in rows:
        print(f"warm e2e stages {r['resolution']}²: {r['e2e_stages']}")
        print(f"cold {r['resolution']}²: {r['cold_summary']}")
        print(f"cold split {r['resolution']}² (after interpreter start): {r['cold_split']}")


if __name__ == "__main__":
    main()
