"""Run a loaded speech model over a clip of any length.

Why windows: attention memory grows with the square of the clip length (a 10-minute clip is
30 000 frames), so long audio runs as overlapping windows (default 30 s, 5 s overlap) in
batches. Every window starts on a multiple of the hop (320 samples), so its frames are the
very frames a single pass would compute, and consecutive windows are joined by a linear
crossfade over the middle of their overlap: each kept frame has at least
(overlap - crossfade) / 2 = 2 s of context on both sides, more than the positional conv's
reach (+-1.28 s). GroupNorm (base) models normalise conv layer 0 over the whole input; those
per-channel statistics are computed once over the whole clip and shared by every window. What
stays different from one pass is attention beyond the window; ``tests/test_speech_models.py``
measures how close the result stays.

Normalisation (zero mean, unit variance) is computed over the whole clip before windowing,
as a single pass would do it. CPU runs in float32; on CUDA ``autocast="fp16"``/``"bf16"``
runs the matmuls in half precision (norms stay float32, as torch.autocast does).
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..errors import SonicInputError
from .output import SpeechModelOutput

_AUTOCAST = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def window_starts(num_samples: int, window: int, overlap: int, hop: int) -> list[int]:
    """Window start samples (multiples of `hop`); all windows are `window` long except the last,
    which ends exactly at `num_samples` (its length is in [window, window + hop))."""
    if num_samples <= window:
        return [0]
    step = max(hop, window - overlap)
    starts = list(range(0, num_samples - window, step))
    last = ((num_samples - window) // hop) * hop
    if starts and last == starts[-1]:
        starts[-1] = last
    else:
        starts.append(last)
    return starts


def _autocast_dtype(autocast, device: torch.device):
    if autocast in (None, False, "fp32", "float32", torch.float32) or device.type != "cuda":
        return None
    if isinstance(autocast, torch.dtype):
        return autocast
    try:
        return _AUTOCAST[str(autocast).lower()]
    except KeyError:
        raise SonicInputError(f"autocast must be None, 'fp16' or 'bf16', got {autocast!r}.") from None


def _as_mono(audio) -> np.ndarray:
    if hasattr(audio, "detach"):
        audio = audio.detach().float().cpu().numpy()
    x = np.asarray(audio, np.float32)
    if x.ndim == 3 and x.shape[0] == 1:  # ComfyUI AUDIO waveform [1, C, N]
        x = x[0]
    if x.ndim == 2:
        x = x.mean(axis=0) if x.shape[0] <= x.shape[1] else x.mean(axis=1)
    if x.ndim != 1:
        raise SonicInputError(f"Speech model input must be a mono waveform [samples]; got shape {x.shape}.")
    if x.size == 0:
        raise SonicInputError("Speech model input is empty (0 samples).")
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return x


def encode(model, audio, *, sample_rate: int | None = None, window_s: float = 30.0, overlap_s: float = 5.0,
           crossfade_s: float = 1.0, batch_size: int = 4, autocast=None, output_hidden_states: bool = False,
           normalize: bool | None = None) -> SpeechModelOutput:
    """Waveform -> SpeechModelOutput (hidden [T, C], CTC logits [T, V] when the model has a head).

    model: a :class:`~sonic_core.speech_models.load.SpeechModel`.
    audio: mono samples ([N]; [C, N] / [1, C, N] are averaged to mono), numpy or torch.
    sample_rate: rate of `audio`; resampled to the model's 16 kHz when different (None = already 16 kHz).
    window_s / overlap_s / crossfade_s: long-clip windowing (see the module docstring); clips up to
        `window_s` run in one pass. batch_size: windows per forward call.
    autocast: None (float32) or "fp16"/"bf16" (CUDA only; ignored on CPU, which stays float32).
    output_hidden_states: also return every layer ([L+1, T, C] float32; memory grows with L).
    normalize: override the model's zero-mean/unit-variance input normalisation.

    Frame j of the result covers input samples [320 j, 320 j + 400); the clip is zero-padded to
    one receptive field (25 ms) when shorter.
    """
    enc = model.encoder
    cfg = model.config
    rate = int(model.sample_rate)
    x = _as_mono(audio)
    if sample_rate is not None and int(sample_rate) != rate:
        from ..audio.features import resample_mono

        x = resample_mono(x, int(sample_rate), rate)
    num_samples = len(x)
    hop, rf = cfg.hop, cfg.receptive_field
    if len(x) < rf:
        x = np.pad(x, (0, rf - len(x)))
    wave = torch.from_numpy(np.ascontiguousarray(x))
    do_norm = model.do_normalize if normalize is None else bool(normalize)
    if do_norm:
        wave = enc.normalize_input(wave)
    n = len(wave)
    total = cfg.num_frames(n)
    window = max(rf, round(window_s * rate / hop) * hop)
    overlap = round(overlap_s * rate / hop) * hop
    if window - overlap < hop and n > window:
        raise SonicInputError(f"overlap_s ({overlap_s}) must be shorter than window_s ({window_s}).")
    starts = window_starts(n, window, overlap, hop)
    device = model.device
    ac = _autocast_dtype(autocast, device)
    dtype = model.dtype

    hidden = None  # [T, C] or [L+1, T, C], float32 on the CPU
    weight = np.zeros(total, np.float64)
    fade = max(1, round(crossfade_s * rate / hop))
    spans = [(s, min(n, s + window) if k < len(starts) - 1 else n) for k, s in enumerate(starts)]
    frames = [(a // hop, cfg.num_frames(b - a)) for a, b in spans]  # (first global frame, frame count)
    # Group windows of equal length so each group is one batched forward call.
    groups: dict[int, list[int]] = {}
    for k, (a, b) in enumerate(spans):
        groups.setdefault(b - a, []).append(k)
    with torch.inference_mode():
        stats = None
        if len(spans) > 1 and cfg.feat_extract_norm == "group":
            stats = enc.conv_norm_stats(wave.to(device))
        for ks in groups.values():
            for i in range(0, len(ks), max(1, int(batch_size))):
                chunk = ks[i:i + max(1, int(batch_size))]
                batch = torch.stack([wave[spans[k][0]:spans[k][1]] for k in chunk]).to(device=device, dtype=dtype)
                ctx = torch.autocast(device_type=device.type, dtype=ac) if ac is not None else contextlib.nullcontext()
                with ctx:
                    out = enc(batch, output_hidden_states=output_hidden_states, apply_lm_head=False,
                              conv_norm_stats=stats)
                res = torch.stack(out.hidden_states, dim=1) if output_hidden_states else out.last_hidden_state[:, None]
                res = res.float().cpu().numpy()  # [b, L', t, C]
                for row, k in enumerate(chunk):
                    f0, t = frames[k]
                    w = _window_weights(k, frames, fade)
                    if hidden is None:
                        hidden = np.zeros((res.shape[1], total, res.shape[3]), np.float32)
                    hidden[:, f0:f0 + t] += res[row] * w[None, :, None].astype(np.float32)
                    weight[f0:f0 + t] += w
    hidden /= np.maximum(weight, 1e-12)[None, :, None].astype(np.float32)
    last = hidden[-1]
    logits = None
    if enc.lm_head is not None:  # linear, so applying it to the crossfaded hidden state equals fading logits
        with torch.inference_mode():
            head = enc.lm_head
            logits = torch.nn.functional.linear(torch.from_numpy(last).to(device), head.weight.float(),
                                                head.bias.float()).cpu().numpy()
    return SpeechModelOutput(
        hidden=np.ascontiguousarray(last), logits=logits, vocab=model.vocab if logits is not None else None,
        frame_rate=rate / hop, kind=model.kind, hidden_states=hidden if output_hidden_states else None,
        num_samples=num_samples, sample_rate=rate, hop=hop, receptive_field=rf,
        blank_id=model.blank_id if logits is not None else None,
        vocab_type=model.vocab_type if logits is not None else None,
    )


def _window_weights(k: int, frames: list[tuple[int, int]], fade: int) -> np.ndarray:
    """Crossfade weights of window k over its own frames: ramps centred on the middle of each overlap."""
    f0, t = frames[k]
    g = np.arange(f0, f0 + t, dtype=np.float64)
    w = np.ones(t)
    if k > 0:  # ramp up against the previous window
        p0, pt = frames[k - 1]
        w *= _ramp(g, f0, p0 + pt, fade)
    if k < len(frames) - 1:  # ramp down against the next one
        w *= 1.0 - _ramp(g, frames[k + 1][0], f0 + t, fade)
    return w


def _ramp(g: np.ndarray, ov_start: int, ov_end: int, fade: int) -> np.ndarray:
    """0 -> 1 over `fade` frames centred in the overlap [ov_start, ov_end) of two windows.

    The later window takes r, the earlier 1 - r, so the two always sum to 1.
    """
    width = max(1, min(fade, ov_end - ov_start))
    mid = 0.5 * (ov_start + ov_end - 1)
    return np.clip((g - mid) / width + 0.5, 0.0, 1.0)
