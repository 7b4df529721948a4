"""sonic_core.motion.post: measured lip shift (cross-correlation lag) and zero-lag smoothing."""
from __future__ import annotations

import numpy as np
import pytest

from sonic_core import SonicInputError
from sonic_core.motion.post import postprocess
from sonic_core.types import MotionTrack

FPS = 25.0


def _track(n: int = 500, seed: int = 0, noise: float = 0.0) -> MotionTrack:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FPS
    # Syllable-like mouth: random bursts, closed (0) between them.
    jaw = np.clip(np.convolve(rng.random(n) > 0.85, np.hanning(7), mode="same"), 0, 1) * 0.4
    jaw[jaw < 0.02] = 0.0
    rot = np.stack([np.sin(2 * np.pi * 0.3 * t + k) * 0.05 for k in range(3)], axis=1)
    trans = np.stack([np.sin(2 * np.pi * 0.2 * t + k) * 0.01 for k in range(2)], axis=1)
    rot = rot + noise * rng.standard_normal(rot.shape)
    trans = trans + noise * 0.2 * rng.standard_normal(trans.shape)
    return MotionTrack(fps=FPS, jaw_open=jaw.astype(np.float32), lip_width=(-0.2 * jaw).astype(np.float32),
                       head_rotation=rot.astype(np.float32), head_translation=trans.astype(np.float32),
                       blink=np.zeros(n, np.float32), brow_raise=np.zeros(n, np.float32))


def _lag(a: np.ndarray, b: np.ndarray, max_lag: int = 15) -> int:
    """Lag (frames) of b relative to a that maximises their cross-correlation (+ = b later)."""
    a = a - a.mean()
    b = b - b.mean()
    best, best_lag = -np.inf, 0
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            c = float(np.dot(a[: len(a) - lag], b[lag:]))
        else:
            c = float(np.dot(a[-lag:], b[: len(b) + lag]))
        if c > best:
            best, best_lag = c, lag
    return best_lag


@pytest.mark.parametrize("offset", [0.12, -0.2, 0.03, 0.36])
def test_alignment_offset_shifts_mouth_by_measured_lag(offset):
    tr = _track()
    out = postprocess(tr, lip_align=True, alignment_offset=offset, smooth_motion=False)
    expected = offset * FPS
    assert abs(_lag(tr.jaw_open, out.jaw_open) - expected) <= 1.0
    assert abs(_lag(tr.lip_width, out.lip_width) - expected) <= 1.0
    # Head channels are not shifted, length is unchanged, input not modified.
    np.testing.assert_array_equal(out.head_rotation, tr.head_rotation)
    assert out.num_frames == tr.num_frames
    assert _track().jaw_open.tolist() == tr.jaw_open.tolist()


def test_fractional_offset_interpolates_and_holds_edges():
    tr = _track(50)
    tr.jaw_open[:] = np.arange(50, dtype=np.float32)
    out = postprocess(tr, lip_align=True, alignment_offset=0.03, smooth_motion=False)  # 0.75 frame later
    np.testing.assert_allclose(out.jaw_open[10], 10 - 0.75, atol=1e-5)
    assert out.jaw_open[0] == 0.0  # held edge


def test_lip_align_off_ignores_offset():
    tr = _track()
    out = postprocess(tr, lip_align=False, alignment_offset=0.2, smooth_motion=False)
    np.testing.assert_array_equal(out.jaw_open, tr.jaw_open)


def test_smoothing_reduces_jitter_without_lag_and_keeps_closures():
    clean = _track(noise=0.0)
    noisy = _track(noise=0.01)
    out = postprocess(noisy, lip_align=False, alignment_offset=0.0, smooth_motion=True)

    def jitter(x):
        return float(np.abs(np.diff(x, n=2, axis=0)).mean())

    assert jitter(out.head_rotation) < 0.5 * jitter(noisy.head_rotation)
    assert jitter(out.head_translation) < 0.5 * jitter(noisy.head_translation)
    # Closer to the clean motion than the noisy input was, and not delayed (zero lag).
    assert np.abs(out.head_rotation - clean.head_rotation).mean() < np.abs(noisy.head_rotation - clean.head_rotation).mean()
    for c in range(3):
        assert _lag(noisy.head_rotation[:, c], out.head_rotation[:, c]) == 0
    assert _lag(noisy.jaw_open, out.jaw_open) == 0
    # Full closures stay closed, minima within 10% of the jaw range; peaks keep most of their height.
    closed = noisy.jaw_open == 0
    assert closed.any() and np.all(out.jaw_open[closed] <= 0.1 * noisy.jaw_open.max())
    assert out.jaw_open.max() > 0.85 * noisy.jaw_open.max()


@pytest.mark.parametrize("bad", [5.0, float("nan"), "soon"])
def test_bad_offset_is_a_user_error(bad):
    with pytest.raises(SonicInputError, match="alignment_offset"):
        postprocess(_track(20), lip_align=True, alignment_offset=bad, smooth_motion=False)


def test_auto_align_cancels_a_measured_mouth_delay_on_real_speech():
    """A phonetic track from real (espeak) speech, delayed by 80 ms: auto_align measures the
    delay against the speech loudness and removes it; alignment_offset then applies on top."""
    import dataclasses

    from tests.lipsync_corpus import make_clip
    from sonic_core.audio.features import analyze_speech
    from sonic_core.motion import phonetic_motion
    from sonic_core.motion.post import estimate_offset, shift_channel

    c = make_clip("offset", [("Bob made a big map, and Pam bought my bike.", 0.4), ("Open the blue box.", 0.0)],
                  "en-us", 150)
    samples, rate = c.samples, c.rate
    speech = analyze_speech(samples, rate, FPS)
    loud = speech.loudness
    track = phonetic_motion(samples, rate, speech, seed=0)
    base = estimate_offset(track, loud)
    assert abs(base) <= 0.04, base  # the model itself is within a frame of the sound

    late = dataclasses.replace(track, jaw_open=shift_channel(track.jaw_open, 0.08 * FPS))
    assert abs(estimate_offset(late, loud) - (base + 0.08)) <= 0.015
    fixed = postprocess(late, lip_align=True, auto_align=True, loudness=loud, smooth_motion=False)
    assert abs(estimate_offset(fixed, loud)) <= 0.015
    on_top = postprocess(late, lip_align=True, alignment_offset=0.04, auto_align=True, loudness=loud,
                         smooth_motion=False)
    assert abs(estimate_offset(on_top, loud) - 0.04) <= 0.015
    # lip_align off: nothing moves; auto_align without loudness is a user error.
    np.testing.assert_array_equal(postprocess(late, lip_align=False, auto_align=True, loudness=loud,
                                              smooth_motion=False).jaw_open, late.jaw_open)
    with pytest.raises(SonicInputError, match="auto_align"):
        postprocess(late, lip_align=True, auto_align=True)


def test_alignment_moves_every_mouth_channel_together():
    """alignment_offset used to shift jaw and lip width only: rounding (pucker) and the f/v tuck
    stayed on the old timing, so an 'oo' or an 'f' came a frame apart from its opening."""
    from sonic_core.motion.post import postprocess
    from sonic_core.types import CHANNELS, MotionTrack

    n = 40
    bump = np.zeros(n, np.float32)
    bump[15:18] = 1.0
    z = np.zeros(n, np.float32)
    track = MotionTrack(25.0, bump * 0.3, bump * 0.1, np.zeros((n, 3), np.float32), np.zeros((n, 2), np.float32), z,
                        z, pucker=bump.copy(), lip_tuck=bump * 0.5)
    out = postprocess(track, lip_align=True, alignment_offset=0.08, smooth_motion=False)  # 2 frames later
    mouth = [c.name for c in CHANNELS if c.group == "mouth"]
    assert set(mouth) == {"jaw_open", "lip_width", "pucker", "lip_tuck"}
    for name in mouth:
        before, after = getattr(track, name), getattr(out, name)
        assert int(np.argmax(after)) == int(np.argmax(before)) + 2, name
    assert np.array_equal(out.blink, track.blink) and np.array_equal(out.head_rotation, track.head_rotation)
