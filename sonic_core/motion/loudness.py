"""First motion model: mouth opening from speech loudness, plus idle head motion and blinks.

Deliberately simple and deterministic so the whole chain works end to end; the
phonetic model replaces the mouth part. Head motion is smooth seeded noise whose
amplitude rises a little with speech energy, so the head keeps drifting through
pauses instead of freezing. Blinks follow a seeded renewal process (~15/min).
"""
from __future__ import annotations

import numpy as np

from ..types import MotionTrack, SpeechFeatures

MAX_JAW = 0.42  # widest opening, as a fraction of mouth width


def _attack_release(x: np.ndarray, fps: float, attack_s: float = 0.03, release_s: float = 0.07) -> np.ndarray:
    """One-pole follower: opens quickly on onsets, closes a little slower (no chatter)."""
    a_up = 1.0 - np.exp(-1.0 / (attack_s * fps))
    a_dn = 1.0 - np.exp(-1.0 / (release_s * fps))
    y = np.empty_like(x)
    prev = 0.0
    for i, v in enumerate(x):
        prev += (a_up if v > prev else a_dn) * (v - prev)
        y[i] = prev
    return y


def _smooth_noise(rng: np.random.Generator, n: int, fps: float, period_s: float, channels: int) -> np.ndarray:
    """Band-limited noise in [-1, 1]-ish: a few random sinusoids per channel around `period_s`."""
    t = np.arange(n) / fps
    out = np.zeros((n, channels))
    for c in range(channels):
        for _ in range(4):
            f = 1.0 / (period_s * rng.uniform(0.5, 1.8))
            out[:, c] += np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.5, 1.0)
        out[:, c] /= 2.0
    return out


def blink_track(n: int, fps: float, rng: np.random.Generator, per_minute: float = 15.0) -> np.ndarray:
    """Eyelid closure per frame: full closures of 100-300 ms at irregular intervals."""
    out = np.zeros(n, np.float32)
    t = rng.uniform(0.8, 3.0)
    mean_gap = 60.0 / per_minute
    while t * fps < n:
        dur = rng.uniform(0.12, 0.26)
        i0, i1 = t * fps, (t + dur) * fps
        idx = np.arange(int(np.floor(i0)), min(int(np.ceil(i1)) + 1, n))
        ph = (idx - i0) / max(i1 - i0, 1e-6)
        # Fast close, hold, slower open.
        shape = np.where(ph < 0.35, ph / 0.35, np.where(ph < 0.55, 1.0, 1.0 - (ph - 0.55) / 0.45))
        out[idx] = np.maximum(out[idx], np.clip(shape, 0, 1))
        t += dur + max(0.6, rng.gamma(3.0, mean_gap / 3.0))
    return out


def loudness_motion(speech: SpeechFeatures, dynamic_scale: float = 1.0, motion_scale: float = 1.0,
                    seed: int = 0, blinks: bool = True) -> MotionTrack:
    n, fps = speech.num_frames, speech.fps
    rng = np.random.default_rng(seed)
    drive = np.where(speech.speech, speech.loudness, 0.0).astype(np.float64)
    drive = np.sqrt(np.clip(drive, 0, 1))  # perceptual: moderate syllables open visibly
    jaw = _attack_release(drive, fps) * MAX_JAW * dynamic_scale
    jaw = np.clip(jaw, 0.0, MAX_JAW * 1.6).astype(np.float32)
    lip_width = (-0.08 * jaw / MAX_JAW).astype(np.float32)

    energy = _attack_release(np.asarray(speech.loudness, np.float64), fps, 0.15, 0.6)
    noise = _smooth_noise(rng, n, fps, 3.5, 5)
    amp = (0.6 + 0.4 * energy)[:, None]
    rot = noise[:, :3] * np.radians([3.0, 2.0, 1.5]) * amp
    rot[:, 1] += np.radians(1.2) * (energy - energy.mean())  # a slight nod with emphasis
    trans = noise[:, 3:5] * 0.008 * amp
    brow = np.clip(_attack_release(np.clip(np.diff(energy, prepend=0) * fps * 0.25, 0, 1), fps, 0.05, 0.4), 0, 1)
    return MotionTrack(
        fps=fps, jaw_open=jaw, lip_width=lip_width,
        head_rotation=(rot * motion_scale).astype(np.float32),
        head_translation=(trans * motion_scale).astype(np.float32),
        blink=blink_track(n, fps, rng) if blinks else np.zeros(n, np.float32),
        brow_raise=(brow * 0.6 * motion_scale).astype(np.float32),
    )
