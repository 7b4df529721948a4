"""Per-video-frame speech analysis from the waveform alone (no model weights).

The first motion model only needs how loud and how voiced the speech is at each
video frame, so this is plain signal processing: RMS loudness in a short window
centred on each frame, normalised against the clip's own speech level (so quiet
and loud recordings animate alike), and an autocorrelation voicing measure.
"""
from __future__ import annotations

import numpy as np

from ..types import SpeechFeatures

ANALYSIS_RATE = 16000


def frame_count(duration: float, fps: float) -> int:
    """Frames needed so the video is never shorter than `duration` (rounded up, +-1 frame)."""
    return max(1, int(np.ceil(duration * fps - 1e-6)))


def _frame_windows(x: np.ndarray, centres: np.ndarray, win: int) -> np.ndarray:
    """[N, win] windows of `x` centred on sample indices `centres` (zero outside the signal)."""
    pad = win // 2 + 1
    xp = np.pad(x, (pad, pad + win))
    starts = (centres - win // 2 + pad).astype(np.int64)
    idx = starts[:, None] + np.arange(win)[None, :]
    return xp[idx]


def _voicing(windows: np.ndarray, sr: int) -> np.ndarray:
    """Peak normalised autocorrelation in the 60-400 Hz pitch range (0 = noise/silence, ~1 = voiced)."""
    w = windows - windows.mean(axis=1, keepdims=True)
    w = w * np.hanning(w.shape[1])[None, :]
    n = int(2 ** np.ceil(np.log2(2 * w.shape[1])))
    spec = np.fft.rfft(w, n=n, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, n=n, axis=1)[:, : w.shape[1]]
    lo, hi = int(sr / 400), int(sr / 60)
    peak = ac[:, lo:hi].max(axis=1)
    return np.clip(peak / np.maximum(ac[:, 0], 1e-12), 0.0, 1.0).astype(np.float32)


def _kaiser_lowpass(up: int, down: int) -> tuple[np.ndarray, int]:
    """scipy.signal.resample_poly's default filter: a Kaiser (beta 5) windowed sinc cutting at
    the lower Nyquist, 2 * half_len + 1 taps, gain `up`."""
    half_len = 10 * max(up, down)
    m = np.arange(2 * half_len + 1) - half_len
    h = np.sinc(m / max(up, down)) * np.kaiser(2 * half_len + 1, 5.0)
    return h * (up / h.sum()), half_len


def resample_poly(x: np.ndarray, up: int, down: int, block: int = 1 << 14) -> np.ndarray:
    """Polyphase resampling by up/down with scipy.signal.resample_poly's filter and alignment
    (its output to float32 rounding), in numpy: importing scipy.signal cost a cold start
    more than the whole warm speech analysis.

    Output i is sum_k h[k] * u[i*down + half_len - k], u being x upsampled by zero insertion;
    only the taps that meet a real sample are computed: for outputs i = r + q*up the phase
    of h and the input offset depend on r alone, so each residue r is one strided
    [outputs, taps] view of x times one tap vector.
    """
    x = np.asarray(x, np.float32)
    if up == down:
        return x.copy()
    h, half_len = _kaiser_lowpass(up, down)
    taps = -(-len(h) // up)
    bank = np.zeros(taps * up)
    bank[:len(h)] = h
    bank = bank.reshape(taps, up)[::-1].astype(np.float32)  # bank[taps-1-m, p] = h[p + m*up]
    n_out = -(-x.size * up // down)
    lead = half_len // up + taps  # zeros before x, so every window starts inside the padding
    xp = np.concatenate([np.zeros(lead, np.float32), x, np.zeros(taps + down + 1, np.float32)])
    win = np.lib.stride_tricks.sliding_window_view(xp, taps)  # win[s] = xp[s : s + taps]
    out = np.empty(n_out, np.float32)
    for r in range(min(up, n_out)):
        t = r * down + half_len
        p, j0 = t % up, t // up  # output r + q*up: taps h[p + m*up] on x[j0 + q*down - m]
        first = j0 - (taps - 1) + lead  # window start (in xp) for q = 0
        idx = np.arange(r, n_out, up)
        for q0 in range(0, idx.size, block):
            q1 = min(idx.size, q0 + block)
            rows = win[first + q0 * down: first + (q1 - 1) * down + 1: down]
            out[idx[q0:q1]] = np.einsum("qk,k->q", rows, bank[:, p])  # not BLAS: same sums for any block
    return out


def resample_mono(x: np.ndarray, src_rate: int, dst_rate: int, block_s: float = 20.0) -> np.ndarray:
    """Band-limited polyphase resampling of one channel (analysis only; the MP4 keeps the original audio).

    Long audio is resampled in blocks of about `block_s` seconds, each with a margin wider
    than the filter on both sides (so every output sample sees the same input as in one
    pass), which bounds the temporaries for 10 minutes at 48 kHz.
    """
    from math import gcd

    x = np.asarray(x, np.float32)
    g = gcd(int(src_rate), int(dst_rate))
    up, down = dst_rate // g, src_rate // g
    step = max(1, int(block_s * src_rate) // down) * down  # input samples per block: whole output samples
    if x.size <= 2 * step:
        return resample_poly(x, up, down)
    margin = -(-(12 * max(up, down) // up + 64) // down) * down  # > the filter's half-length, in input samples
    n_out = -(-x.size * up // down)
    out = np.empty(n_out, np.float32)
    for a in range(0, x.size, step):
        lo, hi = max(0, a - margin), min(x.size, a + step + margin)
        y = resample_poly(x[lo:hi], up, down)
        o0 = (a - lo) * up // down
        k = min(step * up // down, n_out - a * up // down)
        out[a * up // down: a * up // down + k] = y[o0: o0 + k]
    return out


def analyze_speech(mono: np.ndarray, sample_rate: int, fps: float, num_frames: int | None = None,
                   window_s: float = 0.04) -> SpeechFeatures:
    """Loudness, voicing and speech/silence per video frame.

    Frame i is shown from i/fps to (i+1)/fps, so it is analysed around its centre
    (i + 0.5)/fps. Works in chunks of frames so memory stays flat for long audio.
    """
    if sample_rate != ANALYSIS_RATE:
        mono = resample_mono(mono, sample_rate, ANALYSIS_RATE)
        sample_rate = ANALYSIS_RATE
    mono = np.asarray(mono, dtype=np.float32)
    n = num_frames if num_frames is not None else frame_count(len(mono) / sample_rate, fps)
    win = int(round(window_s * sample_rate))
    centres_all = np.round((np.arange(n) + 0.5) / fps * sample_rate).astype(np.int64)
    rms = np.empty(n, np.float32)
    voiced = np.empty(n, np.float32)
    for s in range(0, n, 512):  # 512 frames: FFT temporaries stay ~25 MB for any length
        wins = _frame_windows(mono, centres_all[s : s + 512], win)
        rms[s : s + 512] = np.sqrt(np.mean(wins.astype(np.float64) ** 2, axis=1))
        voiced[s : s + 512] = _voicing(wins, sample_rate)
    db = 20.0 * np.log10(np.maximum(rms, 1e-7))
    loud = db[db > -70.0]
    if loud.size < max(3, int(0.02 * n)):
        # Effectively silent audio: no speech anywhere, the mouth stays at rest.
        zeros = np.zeros(n, np.float32)
        return SpeechFeatures(fps=fps, num_frames=n, loudness=zeros, voiced=zeros, speech=zeros.astype(bool),
                              db=db.astype(np.float32), audio_16k=mono)
    peak = float(np.percentile(loud, 95))
    floor = max(float(np.percentile(db, 10)), peak - 45.0)
    # Speech threshold sits between the noise floor and the speech peak: robust to
    # recordings with a raised noise floor (room tone, hum) as well as clean studio audio.
    threshold = floor + 0.35 * (peak - floor)
    loudness = np.clip((db - threshold) / max(peak - threshold, 6.0), 0.0, 1.0).astype(np.float32)
    speech = db > threshold
    return SpeechFeatures(fps=fps, num_frames=n, loudness=loudness, voiced=voiced, speech=speech,
                          db=db.astype(np.float32), threshold_db=threshold, peak_db=peak, audio_16k=mono)
