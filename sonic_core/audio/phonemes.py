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

import logging
import os
from dataclasses import dataclass

import numpy as np

RATE = 16000
log = logging.getLogger(__name__)
FRAME_RATE = 100  # pocketsphinx frames per second


@dataclass(frozen=True)
class PhoneSegment:
    phone: str  # CMU/ARPAbet phone without stress ('AA', 'P', 'SIL', ...)
    start: float  # seconds
    end: float  # seconds (exclusive)
    prob: float = 1.0


def available() -> bool:
    try:
        import pocketsphinx  # noqa: F401
    except Exception:
        return False
    return True


def _decoder():
    """A fresh decoder per call (~0.1 s): its live cepstral-mean estimate would otherwise carry
    over from the previous audio and make results depend on what was decoded before."""
    from pocketsphinx import Decoder, get_model_path

    mp = get_model_path("en-us")
    return Decoder(hmm=os.path.join(mp, "en-us"), allphone=os.path.join(mp, "en-us-phone.lm.bin"),
                   lw=2.0, pip=0.5, beam=1e-40, pbeam=1e-40, samprate=RATE, loglevel="FATAL")


def recognize_phones(mono16k: np.ndarray, chunk_s: float = 30.0) -> list[PhoneSegment] | None:
    """Phone segments of 16 kHz mono audio (float in [-1, 1]); None when pocketsphinx is missing.

    Long audio is decoded in chunks of `chunk_s` seconds (cut at the quietest 10 ms near each
    boundary), so memory stays flat and a decoding search never spans minutes.
    """
    if not available():
        return None
    x = np.asarray(mono16k, np.float32)
    if x.size == 0:
        return []
    peak = float(np.max(np.abs(x)))
    if peak < 1e-5:
        return [PhoneSegment("SIL", 0.0, x.size / RATE)]
    # Normalise level (the acoustic model's features are cepstral-mean normalised, but a
    # clipped or very quiet int16 input still hurts).
    x = x * (0.7 / peak)
    cuts = [0]
    step = int(chunk_s * RATE)
    hop = RATE // FRAME_RATE
    while cuts[-1] + step < x.size - RATE:
        a = cuts[-1] + step - RATE
        seg = x[a: a + 2 * RATE]
        e = np.convolve(seg ** 2, np.ones(hop), mode="valid")[::hop]
        cuts.append(a + int(np.argmin(e)) * hop)
    cuts.append(x.size)
    try:
        dec = _decoder()
    except RuntimeError as e:  # installed but unusable (e.g. its model files are missing)
        log.warning("pocketsphinx could not start (%s); mouth shapes fall back to acoustic cues", e)
        return None
    out: list[PhoneSegment] = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        pcm = (np.clip(x[a:b], -1, 1) * 32767).astype(np.int16).tobytes()
        dec.start_utt()
        dec.process_raw(pcm, full_utt=True)
        dec.end_utt()
        t0 = a / RATE
        for s in dec.seg():
            name = s.word.upper().rstrip("012")
            if name in ("<S>", "</S>", "<SIL>", "SIL", "+NSN+", "+SPN+", "+BREATH+", "+COUGH+", "+NOISE+", "+UM+", "+UH+"):
                name = "SIL" if name in ("<S>", "</S>", "<SIL>", "SIL", "+BREATH+", "+NSN+") else "NOISE"
            start = t0 + s.start_frame / FRAME_RATE
            end = t0 + (s.end_frame + 1) / FRAME_RATE
            try:
                prob = float(dec.get_logmath().exp(s.prob))
            except Exception:
                prob = 1.0
            out.append(PhoneSegment(name, start, min(end, b / RATE), prob))
    return out
