"""Cross-voice lip-sync of the motion track itself (no rendering): tuned vs held-out voices, clean and degraded.

    python benchmarks/lipsync_motion.py [--sets tuned,held_out] [--conditions clean,tel8k,...] [--clips N]
                                        [--transcript] [--json OUT]

The motion model's jaw_open per video frame (25 fps) against the phone-timed openness truth of
the synthesizer (tests/lipsync_corpus.py: espeak-ng voices = tuned, flite voices = held out,
on different Harvard sentences). This isolates the speech -> motion step from the renderer and
the landmark detector, so it runs in seconds per clip and can sweep many voices and
degradations; benchmarks/lipsync.py measures the rendered video end to end.

  corr      correlation of jaw_open with the openness truth (stops from their closure)
  lag_ms    the shift of the mouth against the truth that maximises the correlation (+ = late)
  pbm       p/b/m closure rate: jaw_open <= 0.02 (rig units) on some frame overlapping
            [onset - 50 ms, onset + min(50 ms, duration)]
  sil       jaw_open range (p95 - p5) in silence >= 200 ms from any phone, in % of the speech range
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.espeak_timing import ipa_is_bilabial, openness_track  # noqa: E402
from tests.lipsync_corpus import (CONDITIONS, ESPEAK_VOICES, FLITE_VOICES, HELD_OUT_TEXT, TUNING_TEXT,  # noqa: E402
                                  degrade, make_clip)

FPS = 25.0
CLOSED = 0.02


SETS = ("tuned", "held_out", "held_out_fast", "held_out_chant")


def clip_specs(which: str, count: int):
    """(name, voice, parts, speed, pitch) for a set: `tuned` (espeak-ng voices at several speeds),
    `held_out` (flite voices at their own rate and a few faster), `held_out_fast` (flite 1.5x as
    fast), `held_out_chant` (flite drawn out 1.8x at a held pitch: the nearest to singing)."""
    pitch = None
    if which == "tuned":
        voices, texts, speeds = ESPEAK_VOICES, TUNING_TEXT, (150, 150, 210, 120)
    elif which in SETS:
        voices, texts = tuple(f"flite:{v}" for v in FLITE_VOICES), HELD_OUT_TEXT
        speeds = {"held_out": (150, 150, 210), "held_out_fast": (225,), "held_out_chant": (83,)}[which]
    else:
        raise SystemExit(f"unknown set {which!r}; one of {', '.join(SETS)}")
    out = []
    for k in range(count):
        v = voices[k % len(voices)]
        a, b = texts[(2 * k) % len(texts)], texts[(2 * k + 1) % len(texts)]
        speed = speeds[(k // len(voices)) % len(speeds)]
        if which == "held_out_chant":
            pitch = (110, 220, 130, 95)[k % 4] if v != "flite:slt" else 240
        out.append((f"{v.split(':')[-1]}-{k}@{speed}", v, [(a, 0.6 if k % 3 == 0 else 0.0), (b, 0.0)], speed, pitch))
    return out


def measure_track(jaw: np.ndarray, clip, fps: float = FPS) -> dict:
    from sonic_core.motion.post import best_lag, shifted_corr

    n = len(jaw)
    tgt = openness_track(clip.closure_phones, n, fps)
    bil = [p for p in clip.phones if ipa_is_bilabial(p.ipa)]
    closed = 0
    for p in bil:
        a, b = p.start - 0.05, p.start + min(0.05, p.end - p.start)
        k0, k1 = max(0, int(np.floor(a * fps))), min(n, int(np.ceil(b * fps)))
        closed += bool(k1 > k0 and jaw[k0:k1].min() <= CLOSED)
    t = (np.arange(n) + 0.5) / fps
    speaking = np.zeros(n, bool)
    for p in clip.phones:
        if not p.is_pause:
            speaking |= (t > p.start - 0.2 - 0.5 / fps) & (t < p.end + 0.2 + 0.5 / fps)
    rng = max(np.percentile(jaw[speaking], 97) - np.percentile(jaw[speaking], 3), 1e-6) if speaking.any() else 1e-6
    sil = float(np.percentile(jaw[~speaking], 95) - np.percentile(jaw[~speaking], 5)) / rng if (~speaking).sum() > 3 else 0.0
    return {"corr": shifted_corr(jaw, tgt, 0), "lag_ms": best_lag(jaw, tgt, 5) * 1000 / fps,
            "pbm": (closed, len(bil)), "sil": sil}


def motion_of(samples, rate, clip, transcript: str | None = None):
    from sonic_core.audio.features import frame_count
    from sonic_core.motion.phonetic import phonetic_motion

    n = frame_count(len(samples) / rate, FPS)
    kw = {"transcript": transcript} if transcript else {}
    return phonetic_motion(samples, rate, fps=FPS, num_frames=n, **kw)


def summary(rows):
    c = [r["corr"] for r in rows]
    lag = [r["lag_ms"] for r in rows]
    cl = sum(r["pbm"][0] for r in rows)
    tot = sum(r["pbm"][1] for r in rows)
    return {"n": len(rows), "corr_median": float(np.median(c)), "corr_min": float(np.min(c)),
            "lag_median_ms": float(np.median(lag)), "lag_abs_max_ms": float(np.max(np.abs(lag))),
            "pbm": cl / max(tot, 1), "pbm_counts": (cl, tot), "sil_max": float(np.max([r["sil"] for r in rows])),
            "refused": sum(r.get("refused", False) for r in rows)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="tuned,held_out")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--clips", type=int, default=12, help="clips per set")
    ap.add_argument("--transcript", action="store_true", help="also run with each clip's text as the transcript")
    ap.add_argument("--without-network", action="store_true",
                    help="the motion model without its viseme network (the previous model), for comparison")
    ap.add_argument("--verbose", action="store_true", help="print every clip")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    if args.without_network:
        from sonic_core.motion import viseme_net

        viseme_net.recognizer = lambda: None  # noqa: E731 (the phonetic model asks for it per clip)
    results = {}
    t_start = time.perf_counter()
    modes = ["audio"] + (["transcript"] if args.transcript else [])
    for which in args.sets.split(","):
        specs = clip_specs(which, args.clips)
        clips = [(make_clip(name, parts, voice, speed, pitch=pitch), " ".join(t for t, _ in parts))
                 for name, voice, parts, speed, pitch in specs]
        for cond in args.conditions.split(","):
            for mode in modes:
                rows = []
                for k, (clip, text) in enumerate(clips):
                    x, r = degrade(clip, cond, seed=k)
                    track = motion_of(x, r, clip, text if mode == "transcript" else None)
                    m = measure_track(track.jaw_open, clip)
                    m["clip"] = clip.name
                    m["refused"] = any(n.startswith("transcript not used") for n in track.notes)
                    rows.append(m)
                    if args.verbose:
                        print(f"  {which} {cond} {mode} {clip.name}: corr {m['corr']:.2f} lag {m['lag_ms']:+.0f} "
                              f"pbm {m['pbm'][0]}/{m['pbm'][1]} sil {100 * m['sil']:.0f}% {' '.join(track.notes)}",
                              flush=True)
                s = summary(rows)
                results[f"{which}/{cond}/{mode}"] = s
                print(f"{which:9s} {cond:8s} {mode:10s} corr {s['corr_median']:.2f} (min {s['corr_min']:.2f})  "
                      f"lag {s['lag_median_ms']:+.0f} ms (|max| {s['lag_abs_max_ms']:.0f})  "
                      f"p/b/m {100 * s['pbm']:.0f}% ({s['pbm_counts'][0]}/{s['pbm_counts'][1]})  "
                      f"sil {100 * s['sil_max']:.0f}%" + (f"  transcripts refused {s['refused']}/{s['n']}" if mode == "transcript" else ""),
                      flush=True)
    print(f"({time.perf_counter() - t_start:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
