"""Speech / non-speech detection, robust to room noise and music beds.

Primary: Silero VAD (MIT; its TorchScript model ships inside the `silero-vad` wheel, so no
download). It needs only torch: we never call its audio I/O helpers, so torchaudio is not
required. Importing it calls ``torch.set_num_threads(1)``; :func:`_load_silero` loads it inside
``system.stable_threads()``, which restores the caller's thread count and keeps the face stage
from running meanwhile with one thread (its landmarks would differ: frames differed between
identical runs).

Fallback (silero-vad not installed or failing): an energy + voicing detector with an adaptive
noise floor (the 10th percentile of frame energy), hysteresis and hangover. It is fine on clean
speech and steady noise but, unlike Silero, it cannot tell speech from music.

Output is a speech probability at 100 frames per second (10 ms hop), frame k covering
[k/100, (k+1)/100) seconds.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from ..system import stable_threads

RATE = 16000
FRAME_RATE = 100
_MODELS: dict[str, object] = {}  # device -> Silero TorchScript model, loaded on first use there
_RUN_LOCKS: dict[str, threading.Lock] = {}  # the model keeps its recurrent state inside: one caller at a time
_FAILED = False
_LOCK = threading.Lock()


def _load_silero(device: str = "cpu"):
    """The bundled Silero model on `device` (a copy per device), or None where it cannot run."""
    global _FAILED
    if device in _MODELS or _FAILED:
        return _MODELS.get(device)

    with _LOCK, stable_threads():  # its import sets the process's thread count (restored by the block)
        if device in _MODELS or _FAILED:
            return _MODELS.get(device)
        try:
            from silero_vad import load_silero_vad

            model = load_silero_vad()  # bundled silero_vad.jit, TorchScript, CPU
            _MODELS[device] = model if device == "cpu" else model.to(device)
            _RUN_LOCKS[device] = threading.Lock()
        except Exception:
            if device == "cpu":
                _FAILED = True  # not installed or broken: the energy detector is used
            else:
                _MODELS[device] = None  # this device cannot run it: callers use the CPU copy
    return _MODELS.get(device)


def silero_available() -> bool:
    return _load_silero() is not None


def _silero_probs(x: np.ndarray, stream_windows: int = 32, warmup_windows: int = 16, device=None) -> np.ndarray:
    """Silero probabilities, the audio cut into overlapping streams decoded as one batch.

    The TorchScript model's cost per call hardly depends on the batch size, so one call per
    32 ms window would run near real time. Cutting the audio into streams of
    `stream_windows` (1 s) that each first replay `warmup_windows` (0.5 s) of the audio
    before them, and running all streams in one batch, makes the cost ~50 calls for any
    length up to minutes.

    `device`: where to run it (None: the CPU). On a GPU its many tiny ops do not compete
    for cores: inside a GPU job, beside the phone decoders and the face stage, the CPU
    model's thread team waited several times longer than alone (CHANGELOG). Probabilities
    differ from the CPU's only by float rounding of the ops.
    """
    import torch

    dev = str(torch.device(device)) if device is not None else "cpu"
    model = _load_silero(dev)
    if model is None:
        dev, model = "cpu", _load_silero("cpu")
    win = 512  # Silero's window at 16 kHz (32 ms)
    n = int(np.ceil(len(x) / win))
    L, W = stream_windows, warmup_windows
    B = int(np.ceil(n / L))
    probs = torch.empty((B, L + W), dtype=torch.float32, device=dev)
    # optimized_execution(False): the profiling JIT would re-specialise the graph for every new
    # batch size (seconds each time) for no gain on a model this small.
    stable = stable_threads() if dev == "cpu" else contextlib.nullcontext()  # same probabilities every run
    with _RUN_LOCKS[dev], stable, torch.inference_mode(), torch.jit.optimized_execution(False):
        for s0 in range(0, B, 256):
            nb = min(256, B - s0)
            # Stream b covers windows [b*L - W, (b+1)*L) of the audio (zeros outside it): this
            # batch needs one contiguous span of windows, copied once; each step of the streams
            # is then a strided view of it (no [streams, L+W, win] copy of the audio).
            a = (s0 * L - W) * win
            span = np.zeros(((nb * L + W) * win), np.float32)
            lo, hi = max(a, 0), min(a + span.size, len(x))
            if hi > lo:
                span[lo - a: hi - a] = x[lo:hi]
            rows = torch.from_numpy(span).to(dev).reshape(-1, win)
            model.reset_states()  # the model re-creates its state for a new batch size
            for i in range(L + W):
                probs[s0: s0 + nb, i] = model(rows[i: i + nb * L: L].contiguous(), RATE).reshape(-1)
    probs = probs[:, W:].reshape(-1)[:n].cpu().numpy()
    # Each window's probability describes its own 32 ms: resample to 100 Hz by window centre.
    t_win = (np.arange(n) + 0.5) * win / RATE
    t_out = (np.arange(int(np.ceil(len(x) / RATE * FRAME_RATE))) + 0.5) / FRAME_RATE
    return np.interp(t_out, t_win, probs).astype(np.float32)


def energy_probs(x: np.ndarray) -> np.ndarray:
    """Fallback speech probability from frame energy against an adaptive noise floor."""
    hop = RATE // FRAME_RATE
    n = int(np.ceil(len(x) / hop))
    xp = np.zeros(n * hop + 2 * hop, np.float32)
    xp[hop // 2 : hop // 2 + len(x)] = x
    frames = np.lib.stride_tricks.sliding_window_view(xp, 3 * hop)[::hop][:n]
    db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    floor = np.percentile(db, 10)
    peak = np.percentile(db, 97)
    if peak - floor < 6:
        return np.zeros(n, np.float32)
    thr = floor + 0.3 * (peak - floor)
    p = 1.0 / (1.0 + np.exp(-(db - thr) / 2.0))
    return p.astype(np.float32)


def speech_probability(mono16k: np.ndarray, backend: str = "auto", device=None) -> np.ndarray:
    """Per 10 ms speech probability of 16 kHz mono audio. backend: 'auto', 'silero' or 'energy';
    `device`: where Silero runs (None: the CPU)."""
    x = np.asarray(mono16k, np.float32)
    if x.size == 0:
        return np.zeros(0, np.float32)
    if float(np.max(np.abs(x))) < 1e-4:
        return np.zeros(int(np.ceil(len(x) / RATE * FRAME_RATE)), np.float32)
    if backend in ("auto", "silero") and _load_silero() is not None:
        return _silero_probs(x, device=device)
    if backend == "silero":
        raise RuntimeError("silero-vad is not installed")
    return energy_probs(x)


def runs(mask: np.ndarray, value: bool) -> list[tuple[int, int]]:
    """[start, stop) of every maximal run of `value` in a boolean mask."""
    m = np.asarray(mask, bool) == value
    edges = np.flatnonzero(np.diff(np.concatenate([[False], m, [False]]).astype(np.int8)))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def speech_mask(prob: np.ndarray, on: float = 0.5, off: float = 0.35, min_speech_s: float = 0.06,
                min_silence_s: float = 0.12) -> np.ndarray:
    """Hysteresis + minimum durations: short blips are dropped, short gaps are bridged."""
    m = np.zeros(len(prob), bool)
    state = False
    for i, p in enumerate(prob):
        state = p >= (off if state else on)
        m[i] = state

    for a, b in runs(m, False):
        if a > 0 and b < len(m) and (b - a) < min_silence_s * FRAME_RATE:
            m[a:b] = True
    for a, b in runs(m, True):
        if (b - a) < min_speech_s * FRAME_RATE:
            m[a:b] = False
    return m
