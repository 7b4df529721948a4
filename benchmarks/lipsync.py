"""Lip-sync benchmark: espeak-ng speech with exact phoneme timings -> rendered video -> re-detected lips.

    python benchmarks/lipsync.py [--res 256] [--fps 25] [--models phonetic,loudness] [--quick] [--all-photos]

Tuned clips are espeak-ng voices; held-out clips are flite's voices (another synthesizer with its
own phone timings, tests/flite_timing.py), printed as a separate table.

For each clip (several voices and languages, fast and slow speech, long pauses) and each motion
model, the whole public path `sonic_core.pipeline.generate` renders an MP4 on the CPU; FaceMesh
is re-run on the decoded frames and the mouth opening (inner-lip gap 13-14 over the inter-ocular
distance) is compared with the truth from libespeak-ng's phoneme events (tests/espeak_timing.py):

  corr_tgt   correlation of mouth opening with phoneme-timed target openness (IPA vowel height,
             p/b/m = 0), video frame i = mean target over [i/fps, (i+1)/fps); stops start at
             their closure (`stop_closures`: espeak reports a stop at its release burst, so
             its closure silence would otherwise count as the previous vowel, open)
  corr_evt   the same with every phone starting at its espeak event (stops at the release);
             lag_evt_ms its best lag
  corr_loud  correlation with the speech loudness (SpeechFeatures.loudness)
  lag_ms     the shift of the mouth against the target that maximises the correlation
             (+ = mouth later than the sound), searched over +-5 frames, refined below a frame
             by a parabola through the peak
  pbm        p/b/m closure rate: a bilabial counts as closed when some frame overlapping
             [onset - 50 ms, onset + min(50 ms, duration)] shows the lips closed (gap within 15 %
             of the clip's opening range above the closed level). espeak times a stop at its
             release, so its closure silence lies just before the event: hence the window. The
             closed level is FaceMesh's gap on the same video rendered with the lips held
             together (dynamic_scale 0, same head motion): FaceMesh reads closed lips on a smile
             as partly open, more or less with head pose.
  sil_move   mouth movement in silence (frames >= 200 ms inside pauses): p95 - p5 of the gap
             above that closed level, in % of the opening range during speech (0 = still)
  blinks/min from the rendered eyes: lid gaps 159-145 and 386-374 over the inter-ocular distance;
             a blink is a run of frames at or below the gap FaceMesh reads on the same face with
             both eyes painted shut (FaceMesh never collapses its eye contour: ~85 % of open)
  head_deg   range (p95 - p5) of head roll from the eye line, and nose-tip travel in % of IOD

Targets (English): corr_tgt >= 0.8, |lag| <= 40 ms, pbm >= 90 %, still mouth in silence;
non-English: corr_loud >= 0.5.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.espeak_timing import ipa_is_bilabial, openness_track  # noqa: E402
from tests.lipsync_corpus import make_clip  # noqa: E402

CLIPS = [
    # name, voice, [(text, gap_after_s)], speed
    ("en-us", "en-us", [("Open the big blue box, papa. My mother made fine wafers.", 0.0)], 150),
    ("en-gb", "en-gb", [("The quick brown fox jumps over the lazy dog while Bob makes maps.", 0.0)], 170),
    ("en-fast", "en-us", [("Please remember to buy bread, milk and apples before the shop closes at nine.", 0.0)], 230),
    ("en-slow+pause", "en-us", [("Maybe we will see.", 1.6), ("Bring me the map, and come back by Monday.", 0.0)], 110),
    ("es", "es", [("Buenos días, me llamo Pablo y vivo en Madrid con mi familia.", 0.0)], 150),
    ("de", "de", [("Guten Morgen, wie geht es dir? Ich bin müde, aber mir geht es gut.", 0.0)], 150),
    ("zh", "cmn-latn-pinyin", [("ni3 hao3, wo3 jiao4 xiao3 ming2.", 1.2), ("jin1 tian1 tian1 qi4 hen3 hao3.", 0.0)], 150),
]
# Held out: voices of another synthesizer (flite, `apt-get install flite`) with its own phone timings;
# the motion model was never tuned on them. Skipped when flite is missing.
HELD_OUT = [
    ("flite-slt", "flite:slt", [("Open the big blue box, papa. My mother made fine wafers.", 0.0)], 150),
    ("flite-rms", "flite:rms", [("The quick brown fox jumps over the lazy dog while Bob makes maps.", 0.0)], 150),
    ("flite-awb", "flite:awb", [("Maybe we will see.", 1.2), ("Bring me the map, and come back by Monday.", 0.0)], 150),
    ("flite-kal8k", "flite:kal", [("Please remember to buy bread, milk and apples before the shop closes at nine.", 0.0)], 150),
]
PHOTOS = ("grace_hopper.jpg", "astronaut.png")


def lid_gap(lm):
    """Mean of both eyes' lid gaps (159-145, 386-374) over the inter-ocular distance, per frame."""
    from tests.evaluate import EYE_OUTER

    lm = np.asarray(lm)[..., :2]
    iod = np.linalg.norm(lm[:, EYE_OUTER[0]] - lm[:, EYE_OUTER[1]], axis=-1)
    return (np.linalg.norm(lm[:, 159] - lm[:, 145], axis=-1) + np.linalg.norm(lm[:, 386] - lm[:, 374], axis=-1)) / 2 / iod


def shut_eye_level(frame, lm, analyzer):
    """FaceMesh's lid gap for this face with both eyes painted shut (skin over the aperture).

    FaceMesh's eye contour never collapses fully: on the demo photos it reads an eye painted
    over with skin as ~85 % of the open gap. A rendered blink therefore counts when the
    measured gap is at least as closed as this per-face reference, not at a fixed fraction.
    """
    from PIL import Image, ImageDraw, ImageFilter

    from tests.evaluate import landmarks_of_frames
    from sonic_core.render import topology as tp

    img = Image.fromarray(frame)
    for upper, lower in ((tp.RIGHT_EYE_UPPER, tp.RIGHT_EYE_LOWER), (tp.LEFT_EYE_UPPER, tp.LEFT_EYE_LOWER)):
        poly = [tuple(map(float, lm[k, :2])) for k in list(upper) + list(lower)[::-1]]
        inside = Image.new("L", img.size, 0)
        ImageDraw.Draw(inside).polygon(poly, fill=255)
        ring = np.asarray(inside.filter(ImageFilter.MaxFilter(9))) & ~np.asarray(inside)
        skin = tuple(int(c) for c in np.median(np.asarray(img)[ring > 0], axis=0))
        img = Image.composite(Image.new("RGB", img.size, skin), img, inside.filter(ImageFilter.GaussianBlur(0.8)))
    shut = landmarks_of_frames(np.asarray(img)[None], analyzer, lm)
    return float(lid_gap(shut)[0])


def blink_count(lm, shut_level):
    """Blinks = runs of frames whose lid gap is at or below the painted-shut level."""
    closed = lid_gap(lm) <= shut_level
    return int(np.sum(closed[1:] & ~closed[:-1]) + closed[0])


def measure(frames, analyzer, phones, loudness, fps, closure_phones=None, closed_frames=None):
    """`phones` as espeak reported them; `closure_phones` the same with stops starting at their
    closure (the openness target of corr_tgt; default: `phones`); `closed_frames` the same video
    rendered with the lips held together (dynamic_scale 0: same head motion, same seed), whose
    FaceMesh gap is the per-frame closed level for p/b/m and silence (default: the clip's 3rd
    percentile)."""
    from tests.evaluate import EYE_OUTER, landmarks_of_frames, lip_gap
    from sonic_core.motion.post import best_lag, shifted_corr

    ref = analyzer.analyze(frames[0])[1]
    lm = landmarks_of_frames(frames, analyzer, ref)
    gap = lip_gap(lm)
    n = len(gap)

    def corr_and_lag_ms(truth):
        tgt = openness_track(truth, n, fps)
        return shifted_corr(gap, tgt, 0), best_lag(gap, tgt, 5) * 1000.0 / fps

    corr, lag_ms = corr_and_lag_ms(closure_phones or phones)
    corr_evt, lag_evt_ms = corr_and_lag_ms(phones)
    lo, hi = np.percentile(gap, 3), np.percentile(gap, 97)
    # Opening above closed lips: FaceMesh reads closed lips on a smile as partly open, by an
    # amount that changes with head pose, so the closed level is read on the same face and pose.
    shut = lip_gap(landmarks_of_frames(closed_frames, analyzer, ref))[:n] if closed_frames is not None else np.full(n, lo)
    opening = gap - shut
    thr = 0.15 * (hi - lo)
    bil = [p for p in phones if ipa_is_bilabial(p.ipa)]
    closed = 0
    for p in bil:
        a, b = p.start - 0.05, p.start + min(0.05, p.end - p.start)
        k0, k1 = max(0, int(np.floor(a * fps))), min(n, int(np.ceil(b * fps)))
        if k1 > k0 and opening[k0:k1].min() <= thr:
            closed += 1
    # Silence: frames whose whole interval lies >= 200 ms away from any spoken phone.
    t = (np.arange(n) + 0.5) / fps
    speaking = np.zeros(n, bool)
    for p in phones:
        if not p.is_pause:
            speaking |= (t > p.start - 0.2 - 0.5 / fps) & (t < p.end + 0.2 + 0.5 / fps)
    sil = ~speaking
    rng_speech = max(hi - lo, 1e-6)
    sil_move = (float(np.percentile(opening[sil], 95) - np.percentile(opening[sil], 5)) / rng_speech
                if sil.sum() > 3 else float("nan"))
    eyes = lm[:, EYE_OUTER[1], :2] - lm[:, EYE_OUTER[0], :2]
    roll = np.degrees(np.arctan2(eyes[:, 1], eyes[:, 0]))
    iod = np.linalg.norm(eyes, axis=-1)
    nose = lm[:, 1, :2] - (lm[:, EYE_OUTER[0], :2] + lm[:, EYE_OUTER[1], :2]) / 2  # nose vs eye midpoint (pose)
    nose_travel = float(np.linalg.norm(np.percentile(nose / iod[:, None], 95, axis=0) - np.percentile(nose / iod[:, None], 5, axis=0)))
    return {
        "corr_tgt": corr, "corr_evt": corr_evt, "lag_evt_ms": lag_evt_ms,
        "corr_loud": shifted_corr(gap, np.asarray(loudness[:n]), 0),
        "lag_ms": lag_ms, "pbm": (closed, len(bil)), "sil_move": sil_move,
        "blinks_min": blink_count(lm, shut_eye_level(frames[0], ref, analyzer)) / (n / fps / 60.0),
        "roll_deg": float(np.percentile(roll, 95) - np.percentile(roll, 5)), "nose_pct": 100 * nose_travel,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--models", default="loudness,phonetic",
                    help="motion models to compare: loudness, phonetic, transcript (phonetic with the clip's text)")
    ap.add_argument("--clips", default="", help="comma-separated clip names (default: all)")
    ap.add_argument("--all-photos", action="store_true", help="render every clip on both photos (default: alternate)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--models-dir", default=os.environ.get("SONIC_MODELS_DIR") or str(REPO / ".cache" / "models"))
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from sonic_core.audio.features import analyze_speech
    from tests.evaluate import read_video_frames
    from sonic_core.face import FaceAnalyzer
    from sonic_core.models import ensure_face_models
    from sonic_core.pipeline import generate
    from tests.speech import write_audio

    ensure_face_models(args.models_dir)
    analyzer = FaceAnalyzer(model_dir=args.models_dir, device="cpu")
    models = args.models.split(",")
    wanted = set(filter(None, args.clips.split(",")))
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="lipsync_"))
    from tests.flite_timing import FLITE

    held_out = {c[0] for c in HELD_OUT}
    clips = CLIPS + (HELD_OUT if FLITE else [])
    if not FLITE:
        print("flite not installed: no held-out voices (apt-get install flite)", file=sys.stderr)
    for ci, (name, voice, parts, speed) in enumerate(clips):
        if wanted and name not in wanted:
            continue
        clip = make_clip(name, parts, voice, speed)
        samples, rate, phones = clip.samples, clip.rate, clip.phones
        wav = tmp / f"{name}.wav"
        write_audio(wav, samples[None], rate)
        photos = PHOTOS if args.all_photos else (PHOTOS[ci % 2],)
        for photo in photos:
            for model in models:
                def render(out, **kw):
                    if model == "transcript":  # the phonetic model with the clip's text aligned to it
                        kw.update(motion_model="phonetic", transcript=" ".join(t for t, _ in parts),
                                  transcript_language=voice if not voice.startswith("flite:") else "en-us")
                    else:
                        kw.update(motion_model=model)
                    return generate(REPO / "assets" / photo, wav, out, min_resolution=args.res, fps=args.fps, device="cpu",
                                    model_dir=args.models_dir, analyzer=analyzer, crf=12, **kw)

                out, shut = tmp / f"{name}_{model}_{photo}.mp4", tmp / f"{name}_{model}_{photo}_closed.mp4"
                t0 = time.perf_counter()
                r = render(out)
                dt = time.perf_counter() - t0
                render(shut, dynamic_scale=0.0)  # the lips held together: the closed level, same head motion
                frames = read_video_frames(out)
                loud = analyze_speech(samples, rate, args.fps, len(frames)).loudness
                m = measure(frames, analyzer, phones, loud, args.fps, clip.closure_phones, read_video_frames(shut))
                m.update(clip=name, model=model, photo=photo.split(".")[0], secs=r.seconds, motion_s=r.timings.get("motion", 0.0),
                         total_s=dt)
                rows.append(m)
                print(fmt_row(m), flush=True)
    for title, sel in (("tuned (espeak-ng voices)", [r for r in rows if r["clip"] not in held_out]),
                       ("held out (flite voices, never tuned on)", [r for r in rows if r["clip"] in held_out])):
        if sel:
            print(f"\n{title}")
            print(table(sel))
    return rows


HEADER = ("clip", "photo", "model", "corr_tgt", "corr_evt", "corr_loud", "lag_ms", "lag_evt", "p/b/m", "sil_move",
          "blinks/min", "roll_deg", "nose%", "audio_s", "motion_s")


def fmt_row(m):
    c, t = m["pbm"]
    pbm = f"{c}/{t} ({100 * c / t:.0f}%)" if t else "-"
    return " | ".join([m["clip"], m["photo"], m["model"], f"{m['corr_tgt']:.2f}", f"{m['corr_evt']:.2f}", f"{m['corr_loud']:.2f}",
                       f"{m['lag_ms']:+.0f}", f"{m['lag_evt_ms']:+.0f}", pbm,
                       f"{100 * m['sil_move']:.0f}%" if m["sil_move"] == m["sil_move"] else "-",
                       f"{m['blinks_min']:.0f}", f"{m['roll_deg']:.1f}", f"{m['nose_pct']:.1f}", f"{m['secs']:.1f}",
                       f"{m['motion_s']:.2f}"])


def table(rows):
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + fmt_row(m) + " |" for m in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
