"""Phone recognition with pocketsphinx in allphone mode: which English phone is spoken when.

The pocketsphinx wheel ships an en-us acoustic model and a phone bigram LM, so this needs
no download. Allphone decoding returns a phone string with frame-level segment times
(100 frames per second, 10 ms hop); it is English-trained but still reports broad classes
(vowel vs. consonant, lips closed vs. open) usefully for other languages. The motion model
treats its output as *evidence*, combined with loudness and voicing, never as the only cue.

Optional dependency: without pocketsphinx, :func:`recognize_phones` returns None and the
motion model falls back to signal features only.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..system import usable_cpus
from ..workers import phone_decoder
from ..workers.pool import TIMEOUT_S, WarmPool, WorkerError, child_env, warm_pool

RATE = 16000
log = logging.getLogger(__name__)
FRAME_RATE = 100  # pocketsphinx frames per second


@dataclass(frozen=True)
class PhoneSegment:
    phone: str  # CMU/ARPAbet phone without stress ('AA', 'P', 'SIL', ...)
    start: float  # seconds
    end: float  # seconds (exclusive)
    prob: float = 1.0


def pcm16(x: np.ndarray, gain: float) -> bytes:
    """int16 PCM of `x` times `gain` (the decoder's input; callers level speech to a 0.7 peak)."""
    return (np.clip(x * gain, -1, 1) * 32767).astype(np.int16).tobytes()


def available() -> bool:
    try:
        import pocketsphinx  # noqa: F401
    except Exception:
        return False
    return True


def _cut_points(x: np.ndarray, pieces: int) -> list[int]:
    """Sample indices that split `x` into `pieces` pieces of about equal length, each cut at the
    quietest 10 ms within 1 s (at most an eighth of a piece) of the nominal boundary, so between
    words rather than inside a phone. Exactly `pieces` pieces: one more than there are warm
    decoders would wait for a cold one."""
    hop = RATE // FRAME_RATE
    reach = min(RATE, x.size // (8 * pieces))
    cuts = [0]
    for k in range(1, pieces):
        mid = k * x.size // pieces
        a = max(cuts[-1] + hop, mid - reach)
        seg = x[a: mid + reach]
        if seg.size < hop:
            continue
        e = np.convolve(seg ** 2, np.ones(hop), mode="valid")[::hop]
        cuts.append(a + int(np.argmin(e)) * hop)
    cuts.append(x.size)
    return cuts


def piece_count(seconds: float, workers: int, piece_s: float, min_piece_s: float) -> int:
    """How many pieces to decode at once: one per worker, each about `min_piece_s` or more, at most
    `piece_s`; clips the warm decoders can take in pieces of at most `WARM_PIECE_MAX_S` go to
    them alone (H100, 15 s: a fifth piece in a cold child ended 0.35-0.6 s after the four
    warm ones, and the motion stage waited for it)."""
    n = min(workers, max(1, round(seconds / min_piece_s)))
    if seconds <= KEEP_WARM * WARM_PIECE_MAX_S:
        n = min(n, KEEP_WARM)
    return max(n, math.ceil(seconds / piece_s))


def _decode_in_child(pcm: bytes) -> list[tuple[str, int, int, float]]:
    """Decode in a one-off `python phone_decoder.py` (the fallback when a warm child fails:
    it reports the child's error output)."""
    proc = subprocess.run([sys.executable, "-u", _WORKER], input=pcm, capture_output=True, env=child_env(),
                          timeout=TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode(errors="replace").strip()[-300:] or f"exit code {proc.returncode}")
    return phone_decoder.parse_segments(proc.stdout.decode())


KEEP_WARM = 4  # idle decoders kept (their memory: CHANGELOG); clips up to 60 s decode in at most 4 pieces
WARM_PIECE_MAX_S = 15.0


def decode_piece(pcm: bytes, pool: WarmPool | None = None) -> list[tuple[str, int, int, float]]:
    """Decode one piece in a warm decoder child (this process's pool unless `pool` is given);
    if that fails, in a one-off child."""
    try:
        reply = (pool or warm_pool(_WORKER, keep=KEEP_WARM)).call([pcm])
    except WorkerError as e:
        log.debug("warm phone decoder failed (%s); decoding in a one-off child", e)
        return _decode_in_child(pcm)
    return phone_decoder.parse_segments(reply.decode())


class PhoneJob:
    """Phone recognition started now, collected later with `result()`.

    The audio is cut into pieces (at quiet points) that child processes decode at once, on
    up to `workers` cores (0 = all, at most 8), while the caller goes on with face detection
    and renderer setup. Pieces are `piece_s` long or shorter so all workers get work, but
    about `min_piece_s` or longer (the recogniser's cepstral-mean estimate needs a few seconds
    of speech); see `piece_count`. Where a child cannot run (no usable interpreter, a sandbox), pieces are
    decoded in this process instead: same decoder, same result, just not in parallel.
    """

    def __init__(self, mono16k: np.ndarray, workers: int = 0, piece_s: float = 30.0, min_piece_s: float = 4.0,
                 in_process: bool = False):
        self._result: list[PhoneSegment] | None = None
        self._done = True
        self._futures = []
        self._pool = None
        self._pieces: list[tuple[int, int]] = []
        if not available():
            return
        x = np.asarray(mono16k, np.float32)
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        if x.size == 0 or peak < 1e-5:
            self._result = [PhoneSegment("SIL", 0.0, x.size / RATE)] if x.size else []
            return
        self._done = False
        # Normalise level (the acoustic model's features are cepstral-mean normalised, but a
        # clipped or very quiet int16 input still hurts). Each piece is converted to PCM only
        # when its decoder starts, so no whole-clip copy is held.
        self._x, self._gain = x, 0.7 / peak
        workers = int(workers) or min(8, usable_cpus())
        pieces = piece_count(x.size / RATE, workers, piece_s, min_piece_s)
        self._pieces = list(itertools.pairwise(_cut_points(x, pieces)))
        if not in_process:
            self._pool = ThreadPoolExecutor(min(workers, len(self._pieces)), thread_name_prefix="sonic-phones")
            self._futures = [self._pool.submit(lambda a=a, b=b: decode_piece(self._pcm(a, b))) for a, b in self._pieces]

    def _pcm(self, a: int, b: int) -> bytes:
        return pcm16(self._x[a:b], self._gain)

    def result(self) -> list[PhoneSegment] | None:
        """Phone segments in seconds; None when pocketsphinx is not installed or cannot start."""
        if self._done:
            return self._result
        out: list[PhoneSegment] = []
        decoder = None
        for k, (a, b) in enumerate(self._pieces):
            segs = None
            if self._futures:
                try:
                    segs = self._futures[k].result()
                except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as e:
                    log.debug("phone recognition child failed (%s); decoding in this process", e)
            if segs is None:
                try:
                    decoder = decoder or phone_decoder.make_decoder()
                    segs = phone_decoder.decode(self._pcm(a, b), decoder)
                except RuntimeError as e:  # installed but unusable (e.g. its model files are missing)
                    log.warning("pocketsphinx could not start (%s); mouth shapes fall back to acoustic cues", e)
                    self._finish(None)
                    return None
            t0 = a / RATE
            for word, f0, f1, prob in segs:
                name = word.upper().rstrip("012")
                if name in SILENCE_TOKENS:
                    name = "SIL"
                elif name in NOISE_TOKENS:
                    name = "NOISE"
                out.append(PhoneSegment(name, t0 + f0 / FRAME_RATE, min(t0 + (f1 + 1) / FRAME_RATE, b / RATE), prob))
        self._finish(out)
        return out

    def cancel(self) -> None:
        """Stop decoding (its result is not needed, e.g. a transcript was aligned instead)."""
        if not self._done:
            self._finish(None)

    def _finish(self, result):
        self._result, self._done, self._pieces, self._futures, self._x = result, True, [], [], None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


SILENCE_TOKENS = {"<S>", "</S>", "<SIL>", "SIL", "+BREATH+", "+NSN+"}
NOISE_TOKENS = {"+SPN+", "+COUGH+", "+NOISE+", "+UM+", "+UH+"}
_WORKER = os.path.abspath(phone_decoder.__file__)


def recognize_phones(mono16k: np.ndarray, chunk_s: float = 30.0, workers: int = 0) -> list[PhoneSegment] | None:
    """Phone segments of 16 kHz mono audio (float in [-1, 1]); None when pocketsphinx is missing.

    Pieces of at most `chunk_s` seconds are decoded in parallel child processes (see
    `PhoneJob`), so memory stays flat and a decoding search never spans minutes.
    """
    return PhoneJob(mono16k, workers=workers, piece_s=chunk_s).result()
