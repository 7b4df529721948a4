"""Phonetic motion model: measured on rendered frames (FaceMesh re-detection) and on the track.

Truth comes from libespeak-ng's own phoneme events (tests/espeak_timing.py). Thresholds are
looser than the benchmark targets (benchmarks/lipsync.py) because CI renders small frames.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from .conftest import EXAMPLES
from .espeak_timing import Phone, speak_with_phonemes, stop_closures
from .speech import write_audio

FPS = 25.0


def _clip(parts, voice="en-us", speed=150):
    from tests.lipsync_corpus import make_clip

    c = make_clip("clip", parts, voice, speed, lead=0.4, tail=0.4)
    return c.samples, c.rate, c.phones


@pytest.fixture(scope="module")
def english(tmp_path_factory):
    """English with bilabials and a 1.2 s pause."""
    samples, rate, phones = _clip([("Bob made a map.", 1.2), ("Pam bought my bike.", 0.0)])
    path = tmp_path_factory.mktemp("ph") / "en.wav"
    write_audio(path, samples[None], rate)
    return path, samples, rate, phones


def _render(path, tmp, models_dir, analyzer, res=160, **kw):
    from .evaluate import read_video_frames
    from sonic_core.pipeline import generate

    out = tmp / f"v{abs(hash(tuple(sorted(kw.items()))))}.mp4"
    generate(EXAMPLES / "grace_hopper.jpg", path, out, min_resolution=res, fps=FPS, device="cpu",
             model_dir=models_dir, analyzer=analyzer, crf=10, **kw)
    return read_video_frames(out)


@pytest.fixture(scope="module")
def english_measured(english, tmp_path_factory, models_dir, analyzer):
    from benchmarks.lipsync import measure
    from sonic_core.audio.features import analyze_speech

    path, samples, rate, phones = english
    frames = _render(path, tmp_path_factory.mktemp("r"), models_dir, analyzer, seed=1)
    closed = _render(path, tmp_path_factory.mktemp("c"), models_dir, analyzer, seed=1, dynamic_scale=0.0)
    loud = analyze_speech(samples, rate, FPS, len(frames)).loudness
    return measure(frames, analyzer, phones, loud, FPS, stop_closures(phones, samples, rate), closed)


def test_lips_close_on_pbm(english_measured):
    closed, total = english_measured["pbm"]
    assert total >= 6 and closed / total >= 0.8, english_measured


def test_mouth_follows_phonemes_without_lag(english_measured):
    m = english_measured
    assert m["corr_tgt"] >= 0.7, m
    assert abs(m["lag_ms"]) <= 50, m
    # Also against espeak's raw event timing (stops at their release), which the model never saw adjusted.
    assert m["corr_evt"] >= 0.65 and abs(m["lag_evt_ms"]) <= 60, m


def test_mouth_still_in_silence(english_measured):
    assert english_measured["sil_move"] < 0.15, english_measured


def _head_and_mouth(frames, analyzer):
    from .evaluate import EYE_OUTER, landmarks_of_frames, lip_gap

    ref = analyzer.analyze(frames[0])[1]
    lm = landmarks_of_frames(frames, analyzer, ref)
    gap = lip_gap(lm)
    eye_mid = (lm[:, EYE_OUTER[0], :2] + lm[:, EYE_OUTER[1], :2]) / 2
    iod = np.linalg.norm(lm[:, EYE_OUTER[0], :2] - lm[:, EYE_OUTER[1], :2], axis=-1)
    pose = np.concatenate([(lm[:, 1, :2] - eye_mid) / iod[:, None], eye_mid / iod.mean()], axis=1)
    head = float(np.sum(pose.std(axis=0)))
    return float(np.percentile(gap, 95) - np.percentile(gap, 5)), head


def test_dynamic_and_motion_scale_are_monotonic(tmp_path, english, models_dir, analyzer):
    path = english[0]
    res = {}
    for key, kw in {"d0.5": dict(dynamic_scale=0.5), "d1.5": dict(dynamic_scale=1.5),
                    "m0": dict(motion_scale=0.0), "m1.5": dict(motion_scale=1.5)}.items():
        frames = _render(path, tmp_path, models_dir, analyzer, res=128, duration=2.0, blinks=False, seed=2, **kw)
        res[key] = _head_and_mouth(frames, analyzer)
    assert res["d1.5"][0] > res["d0.5"][0] * 1.3, res  # more mouth motion
    assert res["m1.5"][1] > res["m0"][1] * 2.0, res  # more head motion
    assert res["m0"][1] < 0.6 * res["d0.5"][1], res  # motion_scale 0: head far stiller than at 1 (what is left is detector noise)


# ---- track-level checks (fast) --------------------------------------------------------------
def _track(samples, rate, **kw):
    from sonic_core.audio.features import analyze_speech
    from sonic_core.motion import phonetic_motion

    sf = analyze_speech(samples, rate, FPS)
    return phonetic_motion(samples, rate, sf, **kw), sf


def test_scales_seed_and_silence_on_the_track(english):
    _, samples, rate, phones = english
    base, sf = _track(samples, rate, seed=3)
    again, _ = _track(samples, rate, seed=3)
    other, _ = _track(samples, rate, seed=4)
    assert np.array_equal(base.head_rotation, again.head_rotation) and np.array_equal(base.blink, again.blink)
    assert not np.array_equal(base.head_rotation, other.head_rotation)
    big, _ = _track(samples, rate, seed=3, dynamic_scale=1.5, motion_scale=2.0)
    still, _ = _track(samples, rate, seed=3, dynamic_scale=0.0, motion_scale=0.0)
    assert big.jaw_open.sum() > base.jaw_open.sum() > 0
    assert np.abs(big.head_rotation).sum() > np.abs(base.head_rotation).sum()
    assert np.abs(still.jaw_open).max() == 0 and np.abs(still.head_rotation).max() == 0
    # Silence before the first phone and in the pause: jaw exactly closed.
    t = (np.arange(base.num_frames) + 0.5) / FPS
    speaking = np.zeros(base.num_frames, bool)
    for p in phones:
        if not p.is_pause:
            speaking |= (t > p.start - 0.15) & (t < p.end + 0.15)
    assert (~speaking).sum() > 20
    assert base.jaw_open[~speaking].max() < 0.02
    # The head keeps moving through the pause (no freeze).
    pause = ~speaking & (t > 1.0)
    assert np.ptp(base.head_rotation[pause, 0]) > 1e-3


def test_noise_bed_does_not_make_the_mouth_chatter(english):
    _, samples, rate, phones = english
    rng = np.random.default_rng(0)
    noisy = samples + 0.02 * rng.standard_normal(samples.shape).astype(np.float32)
    track, _ = _track(noisy, rate)
    t = (np.arange(track.num_frames) + 0.5) / FPS
    speaking = np.zeros(track.num_frames, bool)
    for p in phones:
        if not p.is_pause:
            speaking |= (t > p.start - 0.15) & (t < p.end + 0.15)
    assert np.percentile(track.jaw_open[~speaking], 90) < 0.03
    assert track.jaw_open[speaking].mean() > 0.08


def test_non_english_moves_with_loudness(tmp_path):
    s, rate, _ = speak_with_phonemes("Buenos días, me llamo Pablo y vivo en Madrid.", voice="es")
    track, sf = _track(s, rate)
    assert np.corrcoef(track.jaw_open, sf.loudness)[0, 1] > 0.5


def test_vad_keeps_torch_threads():
    from sonic_core.audio import vad

    torch.set_num_threads(2)
    vad._load_silero()
    assert torch.get_num_threads() == 2
    x = np.zeros(16000, np.float32)
    assert vad.speech_probability(x).max() == 0.0
    assert vad.energy_probs(np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.01).shape == (100,)


def _speech_16k():
    """The shipped speech recording (no espeak-ng needed, so the GPU test runs anywhere)."""
    from sonic_core.audio import load_audio
    from sonic_core.audio.features import resample_mono

    clip = load_audio(EXAMPLES / "speech.wav")
    return resample_mono(clip.mono(), clip.sample_rate, 16000)


def test_vad_on_a_device_that_cannot_run_it_falls_back_to_the_cpu():
    from sonic_core.audio import vad

    x = _speech_16k()
    cpu = vad.speech_probability(x)
    assert 0.3 < (cpu > 0.5).mean() < 0.95  # real speech with pauses
    np.testing.assert_array_equal(vad.speech_probability(x, device="meta"), cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_vad_on_the_gpu_agrees_with_the_cpu():
    from sonic_core.audio import vad

    x = _speech_16k()
    cpu, gpu = vad.speech_probability(x), vad.speech_probability(x, device="cuda")
    assert gpu.shape == cpu.shape and np.abs(gpu - cpu).max() < 0.01
    assert ((gpu > 0.5) != (cpu > 0.5)).mean() < 0.005


@pytest.mark.parametrize("voice", ["en-us", "en-us+f3"])
def test_loud_nasals_and_laterals_keep_the_mouth_low(voice):
    """m, n, l are nearly as loud as vowels, so loudness alone opens the mouth on them; their power
    lies outside the vowel formant band, and the acoustic opening is gated by that share."""
    from sonic_core.motion import phonetic

    from .espeak_timing import ipa_openness

    s, rate, phones = speak_with_phonemes("My mother made lemon melon jam in Maine, and Lena only knew him.", voice=voice)
    an = phonetic.analyze(s, rate)
    jaw, loud = phonetic.mouth_channels(an)["jaw_open"], an["feats"]["loud"]

    def median_over(kind, x):
        meds = []
        for p in phones:
            q = p.ipa.strip().lstrip("ˈˌ'")
            a, b = int(p.start * 100) + 1, int(p.end * 100) - 1  # inner frames: away from transitions
            if q and b > a and kind(q):
                meds.append(np.median(x[a:b]))
        assert len(meds) >= 5
        return float(np.median(meds))

    def sonorant(q):
        return q[0] in "mnlŋ" and len(q) <= 2

    def open_vowel(q):
        return ipa_openness(q) >= 0.28

    assert median_over(sonorant, loud) >= 0.6 * median_over(open_vowel, loud)  # loudness cannot tell them apart
    assert median_over(sonorant, jaw) <= 0.4 * median_over(open_vowel, jaw)


def test_stop_closures_start_stops_where_their_silence_starts():
    """The benchmark's truth moves a stop's start from espeak's release event back to its
    closure: the moved stops must begin on a quiet run that reaches the event, well below the
    vowel before; the rest must be untouched."""
    s, rate, phones = speak_with_phonemes("Keep the cat at the top of the pit. Bob ate a big pie.", voice="en-us")
    moved = stop_closures(phones, s, rate)
    assert [p.ipa for p in moved] == [p.ipa for p in phones]
    hop = rate // 200

    def level(t0, t1):
        seg = s[int(t0 * rate): int(t1 * rate)].astype(np.float64)
        frames = seg[: len(seg) // hop * hop].reshape(-1, hop)
        return 10 * np.log10((frames ** 2).mean(axis=1) + 1e-12)

    shifted = 0
    for k, (old, new) in enumerate(zip(phones, moved)):
        if new.start == old.start:
            continue
        assert new.ipa.lstrip("ˈˌ")[0] in "ptkbdɡg" and k > 0, (old, new)
        shifted += 1
        assert 0.005 <= old.start - new.start <= 0.12, (old, new)
        assert moved[k - 1].end == new.start and moved[k - 1].start == phones[k - 1].start
        # The closure's first 5 ms are quiet, far below the sound before it.
        closure, before = level(new.start, new.start + 0.005), level(phones[k - 1].start, new.start)
        assert closure.max() < before.max() - 20, (old, new)
    voiceless = sum(p.ipa.lstrip("ˈˌ")[0] in "ptk" for p in phones[1:] if not p.is_pause)
    assert shifted >= voiceless // 2 >= 3, (shifted, voiceless)


def test_espeak_phone_events_are_sane():
    s, rate, phones = speak_with_phonemes("papa", voice="en-us")
    assert [p for p in phones if p.ipa == "p"], phones
    assert all(0 <= p.start < p.end <= len(s) / rate + 1e-6 for p in phones)
    assert isinstance(phones[0], Phone)
