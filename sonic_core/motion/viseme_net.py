"""A small acoustic model: 10 ms frames of speech -> viseme posteriors (which mouth shape is being made).

Why: the hand-built acoustic opening (loudness x first-formant proxy x vowel-band share) is a
good cue on the voices it was tuned on and a weaker one on others, because the spectral balance
it reads depends on the voice and the recording. This network reads a speaker-normalised
log-mel spectrogram of 60-3800 Hz (so a telephone band loses nothing it uses) with about
+-0.3 s of context and says, per frame, how likely each viseme of `visemes.VISEMES` is. The
shapes stay defined in one place: a channel's value is the posterior-weighted mean of the
visemes' targets, and p/b/m closures are where the MBP posterior wins.

Trained only on generated data (training/train_viseme_net.py): espeak-ng voices and languages
with their exact phone timings, augmented (vocal-tract-length warping, pitch and speed, noise,
music beds, telephone band, reverberation, level). Never on the held-out voices that
benchmarks/lipsync_motion.py reports. The weights ship in the package as safetensors.
"""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .visemes import VISEMES

log = logging.getLogger(__name__)
RATE = 16000
AR = 100
N_MELS = 40
FMIN, FMAX = 60.0, 3800.0
CLASSES = tuple(VISEMES)  # REST first
WEIGHTS = Path(__file__).with_name("viseme_net.safetensors")
FORMAT = "sonic-viseme-net/2"


def mel_filterbank(n_fft: int = 512, warp: float = 1.0) -> np.ndarray:
    """[N_MELS, n_fft//2+1] triangular filters between FMIN and FMAX; `warp` scales the centre
    frequencies (vocal-tract-length perturbation, training only)."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    mels = np.linspace(hz_to_mel(FMIN), hz_to_mel(FMAX), N_MELS + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0) * warp
    f = np.fft.rfftfreq(n_fft, 1.0 / RATE)
    fb = np.zeros((N_MELS, f.size), np.float32)
    for m in range(N_MELS):
        lo, c, hi = hz[m], hz[m + 1], hz[m + 2]
        fb[m] = np.clip(np.minimum((f - lo) / (c - lo), (hi - f) / (hi - c)), 0, None)
    return fb / np.maximum(fb.sum(1, keepdims=True), 1e-9)


def log_mel(x: np.ndarray, warp: float = 1.0, block: int = 2048) -> np.ndarray:
    """[frames, N_MELS] log power, 25 ms Hann windows centred on (k + 0.5) / 100 s, 16 kHz mono in."""
    from .phonetic import _frames

    x = np.asarray(x, np.float32)
    n = int(np.ceil(len(x) / RATE * AR))
    fb = mel_filterbank(warp=warp)
    hann = np.hanning(400).astype(np.float32)
    out = np.empty((n, N_MELS), np.float32)
    for a in range(0, n, block):
        m = min(block, n - a)
        p = np.abs(np.fft.rfft(_frames(x, 400, m, first=a) * hann, n=512, axis=1)) ** 2
        out[a:a + m] = np.log(p @ fb.T + 1e-10)
    return out


def normalize(feats: np.ndarray) -> np.ndarray:
    """Per-clip normalisation: subtract the mean spectrum of the louder half of the frames (the
    speech, whatever the pauses), divide by their overall spread, and add relative level."""
    if len(feats) == 0:
        return np.zeros((0, N_MELS + 1), np.float32)
    level = feats.max(1)
    loud = level >= np.median(level)
    mu = feats[loud].mean(0)
    sd = float(feats[loud].std()) + 1e-3
    rel = (level - np.percentile(level, 95)) / 10.0
    return np.concatenate([(feats - mu) / sd, rel[:, None]], 1).astype(np.float32)


class ChannelNorm(nn.Module):
    """Normalises each frame over its channels (a LayerNorm on [B, C, T]): unlike a norm over the
    time axis, a frame's output depends on its receptive field only, so any split of a long clip
    into blocks gives the same posteriors."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class VisemeNet(nn.Module):
    """Dilated 1-D convolutions over time, residual, non-causal: receptive field +-32 frames."""

    def __init__(self, channels: int = 96, dilations=(1, 2, 4, 8, 16), n_in: int = N_MELS + 1,
                 n_out: int = len(CLASSES)):
        super().__init__()
        self.dilations = tuple(dilations)
        self.inp = nn.Conv1d(n_in, channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv1d(channels, channels, 3, padding=d, dilation=d), ChannelNorm(channels),
                          nn.GELU(), nn.Conv1d(channels, channels, 1)) for d in self.dilations)
        self.out = nn.Conv1d(channels, n_out, 1)

    @property
    def reach(self) -> int:
        return 1 + sum(self.dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, F] -> [B, T, classes] logits
        h = self.inp(x.transpose(1, 2))
        for b in self.blocks:
            h = h + b(h)
        return self.out(h).transpose(1, 2)


def save(model: VisemeNet, path, meta: dict) -> None:
    from safetensors.torch import save_file

    header = {"format": FORMAT, "classes": json.dumps(CLASSES), "channels": str(model.inp.out_channels),
              "dilations": json.dumps(model.dilations), **{k: str(v) for k, v in meta.items()}}
    tmp = Path(str(path) + ".partial")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=header)
    tmp.replace(path)


def load(path=WEIGHTS) -> VisemeNet | None:
    """The network in `path`; None (with a warning) when the file is missing, unreadable or not a
    viseme network of this format and viseme set: the motion model then works without it."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        log.warning("viseme network %s is missing; lip shapes come from the phones and acoustics alone", path)
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT or json.loads(meta.get("classes", "[]")) != list(CLASSES):
            raise ValueError(f"not a {FORMAT} file with visemes {', '.join(CLASSES)}")
        model = VisemeNet(int(meta["channels"]), tuple(json.loads(meta["dilations"])))
        model.load_state_dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as e:
        log.warning("viseme network %s cannot be used (%s); lip shapes come from the phones and acoustics alone",
                    path, e)
        return None
    return model.eval()


class VisemeRecognizer:
    """Viseme posteriors of whole clips, in blocks (memory flat for hours of audio)."""

    def __init__(self, model: VisemeNet):
        self.model = model

    @torch.inference_mode()
    def posteriors(self, mono16k: np.ndarray, block: int = 3000) -> np.ndarray:
        """[frames at 100 Hz, len(CLASSES)] probabilities."""
        feats = normalize(log_mel(mono16k))
        n = len(feats)
        out = np.empty((n, len(CLASSES)), np.float32)
        r = self.model.reach
        for a in range(0, n, block):
            lo, hi = max(0, a - r), min(n, a + block + r)
            x = torch.from_numpy(feats[lo:hi])[None]
            p = torch.softmax(self.model(x)[0], -1).numpy()
            out[a:min(n, a + block)] = p[a - lo: a - lo + min(block, n - a)]
        return out


@functools.lru_cache(maxsize=1)
def recognizer() -> VisemeRecognizer | None:
    """The shipped network, loaded once per process (inference only: safe to share across threads)."""
    model = load()
    return VisemeRecognizer(model) if model is not None else None
