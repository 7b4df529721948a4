"""Where the renderer's time goes: frames/s by batch size, per mouth painter and photo, and a
torch profiler table.

    python benchmarks/profile_render.py --device cuda --resolution 1024 [--painters procedural,classic]
        [--photos grace_hopper.jpg,astronaut.png] [--motion-scale 1] [--no-profile]

The per-painter rows render the same motion (the shipped speech) with each painter: their
difference is what the mouth interior costs per frame.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sonic_core.config import GenerateConfig  # noqa: E402
from sonic_core.face import FaceAnalyzer  # noqa: E402
from sonic_core.models import ensure_face_models  # noqa: E402
from sonic_core.pipeline import Animator, make_motion, prepare_audio, prepare_portrait  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--models-dir", default=None)
    ap.add_argument("--painters", default="procedural,classic")
    ap.add_argument("--photos", default="grace_hopper.jpg,astronaut.png")
    ap.add_argument("--motion-scale", type=float, default=1.0)
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    dev = torch.device(args.device)
    models = ensure_face_models(args.models_dir).parent
    cfg = GenerateConfig(min_resolution=args.resolution, motion_scale=args.motion_scale).validate()
    analyzer = FaceAnalyzer(model_dir=models, device=dev)
    portrait, crop, lm = prepare_portrait(REPO / "assets" / "grace_hopper.jpg", cfg, analyzer)
    _, speech = prepare_audio(REPO / "assets" / "speech.wav", cfg)
    track = make_motion(speech, cfg)
    n = track.num_frames

    def seconds(anim, repeats=1) -> float:
        """Best time of `repeats` renders of the whole track (after one warm-up chunk)."""
        anim.render(track, 0, anim.batch)
        best = float("inf")
        for _ in range(repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in anim.chunks(track):
                pass
            if dev.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        return best

    for b in args.batches:
        cfg.batch_size = b
        dt = seconds(Animator(portrait, crop, lm, cfg, dev, models))
        print(f"batch {b:3d}: {n / dt:8.1f} frames/s ({n} frames in {dt:.3f} s)")
    cfg.batch_size = args.batches[-1]
    for photo in args.photos.split(","):
        portrait_p, crop_p, lm_p = prepare_portrait(REPO / "assets" / photo, cfg, analyzer)
        for painter in args.painters.split(","):
            cfg.mouth_painter = painter
            best = seconds(Animator(portrait_p, crop_p, lm_p, cfg, dev, models), repeats=3)
            print(f"{photo:18s} {painter:11s} batch {cfg.batch_size}: {n / best:8.1f} frames/s, "
                  f"{1000 * best / n:6.2f} ms/frame (best of 3)")
    if args.no_profile:
        return
    cfg.mouth_painter = "procedural"
    cfg.batch_size = args.batches[-1]
    anim = Animator(portrait, crop, lm, cfg, dev, models)
    anim.render(track, 0, cfg.batch_size)
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        for _ in anim.chunks(track):
            pass
        if dev.type == "cuda":
            torch.cuda.synchronize()
    key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=25))


if __name__ == "__main__":
    main()
