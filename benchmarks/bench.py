"""Per-stage timings of the engine: 15 s of speech -> MP4 at 512² and 1024².

    python benchmarks/bench_engine.py --device cuda --json out.json       # GPU set
    python benchmarks/bench_engine.py --device cpu --threads 2            # CPU set (CI-sized)

Stages are timed warm (models loaded, as inside a running ComfyUI), each alone, then
the whole pipeline end to end (render and encode overlap there), then a cold
`python -m sonic_core generate` in a fresh process. Speech: the shipped example,
repeated to the requested length.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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
from sonic_core.video import Mp4Writer  # noqa: E402


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


def bench(res: int, audio: Path, image: Path, device: torch.device, models_dir, analyzer, tmp: Path) -> dict:
    cfg = GenerateConfig(min_resolution=res).validate()
    row: dict = {"resolution": res}
    clip, row["decode"] = timed(lambda: load_audio(audio), device)
    n = frame_count(clip.duration, cfg.fps)
    speech, row["speech"] = timed(lambda: analyze_speech(clip.mono(), clip.sample_rate, cfg.fps, n), device)
    (portrait, crop, lm), row["face"] = timed(lambda: prepare_portrait(image, cfg, analyzer), device)
    track, row["motion"] = timed(lambda: make_motion(speech, cfg), device)
    animator, row["rig_setup"] = timed(lambda: Animator(portrait, crop, lm, cfg, device, models_dir), device)
    animator.render(track, 0, min(animator.batch, n))  # warm-up (kernels, allocator)
    chunks = []

    def render_all():
        chunks.extend(frames for _, _, frames in animator.chunks(track))

    _, row["render"] = timed(render_all, device)
    row["render_fps"] = n / row["render"]

    def encode_all():
        with Mp4Writer(tmp / f"enc_{res}.mp4", res, res, cfg.fps, audio=clip, crf=cfg.crf, preset=cfg.preset,
                       encode_ahead=True) as w:
            for c in chunks:
                w.write(c)

    _, row["encode_mux"] = timed(encode_all, device)
    row["encode_fps"] = n / row["encode_mux"]
    chunks.clear()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result, row["end_to_end_warm"] = timed(
        lambda: generate(image, audio, tmp / f"e2e_{res}.mp4", cfg, device=device, model_dir=models_dir,
                         analyzer=analyzer), device)
    row["e2e_stages"] = {k: round(v, 3) for k, v in result.timings.items()}
    if device.type == "cuda":
        row["peak_vram_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    row["frames"] = n
    row["audio_s"] = clip.duration
    row["realtime_factor"] = clip.duration / row["end_to_end_warm"]
    t = time.perf_counter()
    env = dict(os.environ, SONIC_MODELS_DIR=str(models_dir))
    cmd = [sys.executable, "-m", "sonic_core", "generate", "--image", str(image), "--audio", str(audio),
           "--out", str(tmp / f"cold_{res}.mp4"), "--min-resolution", str(res), "--device", str(device), "-q"]
    subprocess.run(cmd, check=True, cwd=REPO, env=env, capture_output=True)
    row["end_to_end_cold"] = time.perf_counter() - t
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--models-dir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    models_dir = ensure_face_models(args.models_dir).parent
    analyzer = FaceAnalyzer(model_dir=models_dir, device=device)
    image = REPO / "assets" / "grace_hopper.jpg"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        audio = tmp / "speech15.wav"
        make_speech(args.seconds, audio)
        prepare_portrait(image, GenerateConfig(min_resolution=256).validate(), analyzer)  # warm the face models
        rows = [bench(r, audio, image, device, models_dir, analyzer, tmp) for r in args.resolutions]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"\nSonic engine, {args.seconds:g} s of speech, 25 fps, device: {name}, torch {torch.__version__}")
    keys = ["decode", "speech", "face", "motion", "rig_setup", "render", "encode_mux", "end_to_end_warm", "end_to_end_cold"]
    print(f"{'stage (s)':<18}" + "".join(f"{r['resolution']:>10}²" for r in rows))
    for k in keys:
        print(f"{k:<18}" + "".join(f"{r[k]:>11.3f}" for r in rows))
    for k in ("render_fps", "encode_fps", "realtime_factor"):
        print(f"{k:<18}" + "".join(f"{r[k]:>11.1f}" for r in rows))
    if device.type == "cuda":
        print(f"{'peak_vram_gb':<18}" + "".join(f"{r['peak_vram_gb']:>11.2f}" for r in rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
