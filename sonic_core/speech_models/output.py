"""The result of running a speech model, and its exact mapping onto video frames.

Why a separate time-alignment function: the encoder runs at 50 Hz (hop 320 samples at
16 kHz) and its frames are centred 12.5 ms late relative to ``j * 20 ms`` (the conv stack
sees 400 samples, so frame j covers samples [320 j, 320 j + 400) and is centred at
(320 j + 200) / 16000 s). Video runs at any rate (24, 25, 29.97, 30, 60 fps) and frame k
is shown over [k / fps, (k + 1) / fps). Nearest-frame picking or a naive resize would drift
or jitter by up to half a frame; :func:`features_at_fps` integrates the encoder's
piecewise-linear signal over each video interval instead, so every rate gets the same timing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SonicInputError

MODEL_RATE = 16000
HOP = 320
RECEPTIVE_FIELD = 400


@dataclass
class SpeechModelOutput:
    """Per-encoder-frame speech representation of one clip.

    hidden: [T, C] float32 last hidden state (what ComfyUI calls ``encoded_audio``).
    logits: [T, V] float32 CTC logits, or None when the checkpoint has no CTC head.
    vocab: token of each logit column (from vocab.json), or None.
    frame_rate: encoder frames per second (sample_rate / hop = 50.0).
    kind: "wav2vec2", "hubert" or "comfy" (from ComfyUI's encoder output).
    hidden_states: optional [L+1, T, C] float32, every layer's input plus the final output.
    num_samples: waveform length that was encoded, at ``sample_rate``.
    hop, receptive_field: the conv stack's geometry in samples, for exact frame times.
    blank_id: CTC blank (= pad token) column.
    vocab_type: "phonemes" (espeak IPA), "letters", "unsupported" or None (no vocab).
    """

    hidden: np.ndarray
    logits: np.ndarray | None
    vocab: list[str] | None
    frame_rate: float
    kind: str
    hidden_states: np.ndarray | None = None
    num_samples: int = 0
    sample_rate: int = MODEL_RATE
    hop: int = HOP
    receptive_field: int = RECEPTIVE_FIELD
    blank_id: int | None = None
    vocab_type: str | None = None

    @property
    def num_frames(self) -> int:
        return int(self.hidden.shape[0])

    @property
    def duration(self) -> float:
        return self.num_samples / float(self.sample_rate)

    def frame_times(self) -> np.ndarray:
        """Centre of every encoder frame in seconds: (j * hop + receptive_field / 2) / sample_rate."""
        return frame_centres(self.num_frames, self.hop, self.receptive_field, self.sample_rate)

    def at_fps(self, num_frames: int, fps: float, layer: int | None = None) -> np.ndarray:
        """Hidden state (or one layer of ``hidden_states``) resampled to video frames: [num_frames, C]."""
        h = self.hidden
        if layer is not None:
            if self.hidden_states is None:
                raise SonicInputError("This output has no per-layer hidden states; encode with output_hidden_states=True.")
            h = self.hidden_states[layer]
        return features_at_fps(h, num_frames, fps, self.num_samples, self.sample_rate,
                               hop=self.hop, receptive_field=self.receptive_field)

    def viseme_unavailable_reason(self) -> str | None:
        """Why visemes cannot be read from this output (None when they can)."""
        from .visemes import unavailable_reason

        return unavailable_reason(self)


def frame_centres(n: int, hop: int = HOP, receptive_field: int = RECEPTIVE_FIELD,
                  sample_rate: int = MODEL_RATE) -> np.ndarray:
    return (np.arange(n, dtype=np.float64) * hop + receptive_field / 2.0) / float(sample_rate)


def expected_frames(num_samples: int, hop: int = HOP, receptive_field: int = RECEPTIVE_FIELD) -> int:
    """Frames the standard conv stack gives for `num_samples` (exact: nested floors compose to one)."""
    n = int(num_samples)
    return 0 if n < receptive_field else (n - receptive_field) // hop + 1


def features_at_fps(hidden, num_frames: int, fps: float, audio_samples: int, sample_rate: int = MODEL_RATE,
                    *, hop: int = HOP, receptive_field: int = RECEPTIVE_FIELD) -> np.ndarray:
    """Encoder frames [T, C] -> video frames [num_frames, C] with exact time alignment.

    The encoder signal is taken as piecewise linear between frame centres
    ``(j * hop + receptive_field / 2) / sample_rate`` (held constant before the first and after
    the last centre), and video frame k gets its mean over [k / fps, (k + 1) / fps). Below
    50 fps this is a box average over the 2-3 encoder frames a video frame spans; above 50 fps
    it is linear interpolation, so 60 fps is smooth rather than stair-stepped. Frames past the
    end of the audio hold the last encoder frame.

    audio_samples: the waveform length that was encoded, counted at ``sample_rate`` (the rate the
    model ran at, 16 kHz). Used to check that `hidden` really has the frame count that length
    gives; a mismatch means the features came from another model or were cut, and the timing
    would silently drift, so it raises SonicInputError.
    """
    if hasattr(hidden, "detach"):
        hidden = hidden.detach().float().cpu().numpy()
    h = np.asarray(hidden, np.float64)
    if h.ndim == 3 and h.shape[0] == 1:
        h = h[0]
    squeeze = h.ndim == 1
    if squeeze:
        h = h[:, None]
    if h.ndim != 2:
        raise SonicInputError(f"features_at_fps expects hidden states [T, C]; got shape {tuple(h.shape)}.")
    fps = float(fps)
    num_frames = int(num_frames)
    if fps <= 0 or num_frames < 0:
        raise SonicInputError(f"features_at_fps needs fps > 0 and num_frames >= 0 (got {fps}, {num_frames}).")
    t_count = h.shape[0]
    # Our encoder zero-pads clips shorter than one receptive field to one frame; accept both counts.
    want = expected_frames(max(int(audio_samples), receptive_field), hop, receptive_field)
    if t_count not in (want, expected_frames(int(audio_samples), hop, receptive_field)):
        raise SonicInputError(
            f"{t_count} encoder frames do not match {audio_samples} samples at {sample_rate} Hz "
            f"(a hop-{hop} encoder gives {want}); the features are from another model or were trimmed, "
            "so their timing is unknown."
        )
    out = np.zeros((num_frames, h.shape[1]), np.float32)
    if t_count == 0 or num_frames == 0:
        return out[:, 0] if squeeze else out
    c = frame_centres(t_count, hop, receptive_field, sample_rate)
    edges = np.arange(num_frames + 1, dtype=np.float64) / fps
    big_f = _antiderivative(h, c, edges)
    width = np.diff(edges)[:, None]
    out[:] = (big_f[1:] - big_f[:-1]) / width
    return out[:, 0] if squeeze else out


def _antiderivative(h: np.ndarray, c: np.ndarray, t: np.ndarray) -> np.ndarray:
    """F(t) = integral from c[0] to t of the piecewise-linear interpolant of h at knots c (constant outside)."""
    n = len(c)
    if n == 1:
        return (t - c[0])[:, None] * h[0][None]
    seg = np.diff(c)[:, None]
    cum = np.concatenate([np.zeros((1, h.shape[1])), np.cumsum(0.5 * (h[1:] + h[:-1]) * seg, axis=0)])
    k = np.clip(np.searchsorted(c, t, side="right") - 1, 0, n - 2)
    before = t < c[0]
    after = t >= c[-1]
    dt = (t - c[k])[:, None]
    slope = (h[k + 1] - h[k]) / seg[k]
    out = cum[k] + dt * h[k] + 0.5 * dt * dt * slope
    out[before] = (t[before] - c[0])[:, None] * h[0][None]
    out[after] = cum[-1][None] + (t[after] - c[-1])[:, None] * h[-1][None]
    return out
