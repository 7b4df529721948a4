"""Is the renderer slowed by x264 running beside it through the GIL or through the CPUs?

    python benchmarks/contention.py --resolution 1024

Renders the same clip (a) alone, (b) while 8 threads encode H.264 with PyAV (as the writer
does), (c) while 8 processes do the same work, and prints frames/s of each.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _encode_loop(frames: np.ndarray, stop, threads: int) -> None:
    import av

    from sonic_core.video.writer import _codec_options
    while not stop.is_set():
        cc = av.CodecContext.create("libx264", "w")
        cc.width, cc.height, cc.pix_fmt = frames.shape[2], frames.shape[1] * 2 // 3, "yuv420p"
        cc.time_base = Fraction(1, 25)
        cc.thread_count = threads
        cc.options = _codec_options("libx264", 18, "auto")
        cc.open()
        for i, f in enumerate(frames):
            if stop.is_set():
                break
            vf = av.VideoFrame.from_ndarray(f, format="yuv420p")
            vf.pts = i
            cc.encode(vf)
        cc.encode(None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--encoders", type=int, default=8)
    args = ap.parse_args()
    from benchmarks.bench import IMAGE
    from sonic_core.config import GenerateConfig
    from sonic_core.face import FaceAnalyzer
    from sonic_core.models import ensure_face_models
    from sonic_core.pipeline import Animator, make_motion, prepare_audio, prepare_portrait
    from sonic_core.video.colour import rgb_to_yuv420p

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models = ensure_face_models(None).parent
    cfg = GenerateConfig(min_resolution=args.resolution).validate()
    an = FaceAnalyzer(model_dir=models, device=dev)
    portrait, crop, lm = prepare_portrait(IMAGE, cfg, an)
    _, speech = prepare_audio(REPO / "assets" / "speech.wav", cfg)
    track = make_motion(speech, cfg)
    anim = Animator(portrait, crop, lm, cfg, dev, models)
    frames = rgb_to_yuv420p(anim.render(track, 0, 24)).cpu().numpy()
    frames = frames.reshape(len(frames), -1, args.resolution)
    threads = max(1, (mp.cpu_count() // args.encoders))

    def render_fps(label):
        for _ in range(2):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            n = 0
            for _, _, f in anim.chunks(track):
                n += len(f)
            if dev.type == "cuda":
                torch.cuda.synchronize()
        dt = time.perf_counter() - t
        print(f"{label:<28} {n / dt:7.1f} frames/s", flush=True)

    render_fps("render alone")
    ctx = mp.get_context("spawn")
    # (kind, worker class, stop event, settle time: processes import PyAV first)
    for kind, make, stop, settle in [("threads", threading.Thread, threading.Event(), 0.5),
                                     ("processes", ctx.Process, ctx.Event(), 3.0)]:
        encoders = [make(target=_encode_loop, args=(frames, stop, threads), daemon=True) for _ in range(args.encoders)]
        for e in encoders:
            e.start()
        time.sleep(settle)
        render_fps(f"render + {args.encoders} x264 {kind}")
        stop.set()
        for e in encoders:
            e.join()
    render_fps("render alone again")


if __name__ == "__main__":
    main()
