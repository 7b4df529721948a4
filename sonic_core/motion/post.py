"""Post-processing of a motion track: lip alignment and zero-phase motion smoothing.

    from sonic_core.motion.post import postprocess
    track = postprocess(track, lip_align=True, alignment_offset=0.03, smooth_motion=True)

Options (the ComfyUI "Sonic Postprocess" node exposes exactly these):

- ``lip_align`` + ``alignment_offset`` (seconds): shift the mouth channels (``jaw_open``,
  ``lip_width``, ``pucker``, ``lip_tuck``: `types.CHANNELS`) in time relative to the sound. Positive = the mouth moves *later*, negative =
  earlier. Fractional frames are linearly interpolated, so 0.03 s at 25 fps (0.75 frame) is a
  real 30 ms shift, not a rounding to 0 or 1 frame; the first/last value is held at the edges.
  Head, blink and brow channels are not shifted. ``lip_align=False`` ignores the offset.
- ``auto_align`` (with ``lip_align``): estimate the mouth's own lead/lag against the speech
  loudness (cross-correlation peak, sub-frame, searched within +-0.2 s) and cancel it before
  ``alignment_offset`` is applied, so the offset is then relative to measured sync.
- ``smooth_motion``: a centred (zero-phase, so it never delays the motion) Gaussian over each
  channel with its own sigma (`types.CHANNELS`: head rotation and translation 60 ms, brows
  40 ms, the mouth channels 12 ms keeping closures: frames where the mouth is closed in the
  input stay as they are, so p/b/m stay sealed). Blinks are left alone (full closures by design).

The input track is never modified; a new MotionTrack is returned.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..types import CHANNELS, MotionTrack

CLOSED_JAW = 1e-3  # a jaw opening at or below this counts as a closed mouth
MAX_OFFSET_S = 1.0
AUTO_MAX_S = 0.2  # auto_align searches lags up to this far (a larger one is not a sync error of ours)


def shift_channel(x: np.ndarray, frames: float) -> np.ndarray:
    """Delay `x` (along axis 0) by `frames` (fractional; negative = advance), holding edge values."""
    x = np.asarray(x)
    n = x.shape[0]
    if n == 0 or frames == 0:
        return x.copy()
    src = np.arange(n, dtype=np.float64) - float(frames)
    idx = np.arange(n, dtype=np.float64)
    if x.ndim == 1:
        return np.interp(src, idx, x.astype(np.float64)).astype(x.dtype)
    flat = x.reshape(n, -1).astype(np.float64)
    out = np.stack([np.interp(src, idx, flat[:, c]) for c in range(flat.shape[1])], axis=1)
    return out.reshape(x.shape).astype(x.dtype)


def shifted_corr(a: np.ndarray, b: np.ndarray, lag: int) -> float:
    """corr(a[i], b[i - lag]); 0 where either side is constant."""
    if lag > 0:
        a, b = a[lag:], b[:-lag]
    elif lag < 0:
        a, b = a[:lag], b[-lag:]
    if len(a) < 3 or a.std() < 1e-9 or b.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def best_lag(a: np.ndarray, b: np.ndarray, max_lag: int) -> float:
    """Frames by which `a` follows `b` (+ = a later), at the peak of their cross-correlation
    within +-max_lag, refined to a fraction of a frame by a parabola through the peak."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    lags = np.arange(-int(max_lag), int(max_lag) + 1)
    cs = np.array([shifted_corr(a, b, int(k)) for k in lags])
    i = int(np.argmax(cs))
    if not np.isfinite(cs[i]) or cs[i] <= 0:
        return 0.0
    frac = 0.0
    if 0 < i < len(cs) - 1:
        den = cs[i - 1] - 2 * cs[i] + cs[i + 1]
        if den < 0:
            frac = float(np.clip(0.5 * (cs[i - 1] - cs[i + 1]) / den, -0.5, 0.5))
    return float(lags[i] + frac)


def estimate_offset(track: MotionTrack, loudness: np.ndarray, max_s: float = AUTO_MAX_S) -> float:
    """Seconds by which the mouth (jaw opening) follows the speech loudness (+ = mouth late).

    A jaw opens widest on a syllable's vowel, where the sound is loudest, so in sync the two
    tracks peak together; the cross-correlation peak (sub-frame) measures any systematic lead
    or lag of the mouth. Returns 0 for silent audio or a still mouth.
    """
    n = min(track.num_frames, len(loudness))
    if n < 8:
        return 0.0
    fps = float(track.fps)
    return best_lag(track.jaw_open[:n], np.asarray(loudness)[:n], max(1, int(round(max_s * fps)))) / fps


def gaussian_smooth(x: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Centred Gaussian along axis 0 (zero phase: same as a forward-backward filter); edges mirror."""
    x = np.asarray(x)
    if sigma_frames <= 0.05 or x.shape[0] < 2:
        return x.copy()
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(x.astype(np.float64), sigma_frames, axis=0, mode="reflect",
                             truncate=3.0).astype(x.dtype)


def postprocess(track: MotionTrack, lip_align: bool = True, alignment_offset: float = 0.0,
                smooth_motion: bool = True, auto_align: bool = False,
                loudness: np.ndarray | None = None) -> MotionTrack:
    """Return a new MotionTrack with lip alignment and/or smoothing applied (see module doc).

    `auto_align` (needs the speech `loudness` per frame): first remove the mouth's measured
    lead or lag against the sound (`estimate_offset`), then apply `alignment_offset` on top."""
    from ..errors import SonicInputError

    try:
        offset = float(alignment_offset)
    except (TypeError, ValueError):
        raise SonicInputError(f"Setting 'alignment_offset' must be a number of seconds (got {alignment_offset!r}).") from None
    if not np.isfinite(offset) or abs(offset) > MAX_OFFSET_S:
        raise SonicInputError(f"Setting 'alignment_offset' must be between -{MAX_OFFSET_S:g} and {MAX_OFFSET_S:g} "
                              f"seconds (got {alignment_offset}); 0.03 is a typical correction.")
    fps = float(track.fps)
    if lip_align and auto_align:
        if loudness is None:
            raise SonicInputError("auto_align needs the speech loudness to measure the mouth's timing against.")
        offset -= estimate_offset(track, loudness)
    values = {c.name: np.asarray(getattr(track, c.name)).copy() for c in CHANNELS}
    if lip_align and offset != 0.0:
        for c in CHANNELS:
            if c.group == "mouth":
                values[c.name] = shift_channel(values[c.name], offset * fps)
    if smooth_motion:
        closed = values["jaw_open"] <= CLOSED_JAW
        for c in CHANNELS:
            if c.smooth_s > 0:
                smoothed = gaussian_smooth(values[c.name], c.smooth_s * fps)
                if c.group == "mouth":
                    smoothed[closed] = values[c.name][closed]
                values[c.name] = smoothed
    # dataclasses.replace keeps any field this module does not know about.
    return dataclasses.replace(track, **{k: v.astype(np.float32) for k, v in values.items()})
