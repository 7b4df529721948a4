"""Speech from a second synthesizer with its own phone timings: flite (Debian `apt-get install flite`).

Held-out voices for the lip-sync benchmark (the motion model was tuned on espeak-ng's voices):
flite's kal (US male, 8 kHz diphones), awb (Scottish male), rms (US male) and slt (US female),
each with its own durations. `flite -psdur` prints every segment with its end time; the phones
are CMU ARPAbet, mapped here to IPA so the same openness and closure rules as espeak's apply.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from .espeak_timing import Phone

FLITE = shutil.which("flite")
VOICES = ("kal", "awb", "rms", "slt")

ARPABET_IPA = {
    "pau": "_", "aa": "ɑ", "ae": "æ", "ah": "ʌ", "ao": "ɔ", "aw": "aʊ", "ax": "ə", "axr": "ɚ", "ay": "aɪ",
    "eh": "ɛ", "er": "ɝ", "ey": "eɪ", "ih": "ɪ", "ix": "ɨ", "iy": "i", "ow": "oʊ", "oy": "ɔɪ", "uh": "ʊ",
    "uw": "u", "b": "b", "ch": "tʃ", "d": "d", "dh": "ð", "dx": "ɾ", "el": "l̩", "em": "m̩", "en": "n̩",
    "f": "f", "g": "ɡ", "hh": "h", "jh": "dʒ", "k": "k", "l": "l", "m": "m", "n": "n", "ng": "ŋ", "p": "p",
    "r": "ɹ", "s": "s", "sh": "ʃ", "t": "t", "th": "θ", "v": "v", "w": "w", "y": "j", "z": "z", "zh": "ʒ",
}


def speak_flite(text: str, voice: str = "slt", stretch: float = 1.0, f0: float | None = None
                ) -> tuple[np.ndarray, int, list[Phone]]:
    """Synthesize `text` with flite's `voice`: (float32 mono samples, rate, phones with their times).
    `stretch` scales flite's durations (0.7: fast speech, 1.8: drawn-out vowels); `f0` holds the
    pitch near that many Hz (with `stretch` > 1: a chant, the nearest flite comes to singing)."""
    if FLITE is None:
        raise RuntimeError("flite is not installed (apt-get install flite)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        out = subprocess.run([FLITE, "-voice", voice, "-t", text, "-o", str(wav), "-psdur",
                              "--setf", f"duration_stretch={stretch:g}"]
                             + (["--setf", f"int_f0_target_mean={f0:g}", "--setf", "int_f0_target_stddev=3"] if f0 else []), capture_output=True,
                             text=True, check=True).stdout
        with wave.open(str(wav)) as w:
            rate = w.getframerate()
            samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
    phones, start = [], 0.0
    for item in out.split():
        name, _, end = item.rpartition(":")
        end = float(end)
        phones.append(Phone(start, end, ARPABET_IPA.get(name, name)))
        start = end
    return samples, rate, phones
