"""Speech with exact phoneme timings, from libespeak-ng through ctypes.

    samples, rate, phones = speak_with_phonemes("Open the big box.", voice="en-us", speed=150)
    # phones: list of Phone(start, end, ipa, name) in seconds from the first sample

The synthesizer itself reports every phoneme it plays (espeakEVENT_PHONEME, with the audio
position in ms), in the same call that produces the samples, so the timings are exact
ground truth for lip-sync tests and benchmarks (no forced alignment involved). Phonemes
are reported in IPA (espeakINITIALIZE_PHONEME_IPA), which is the same alphabet for every
language, so `ipa_openness` / `ipa_is_bilabial` work for Spanish, German or Chinese too.

Skips (pytest) or raises when libespeak-ng is missing: `apt-get install espeak-ng`.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass

import numpy as np

# speak_lib.h constants
AUDIO_OUTPUT_SYNCHRONOUS = 2
INIT_PHONEME_EVENTS = 0x0001
INIT_PHONEME_IPA = 0x0002
INIT_DONT_EXIT = 0x8000
EVENT_LIST_TERMINATED, EVENT_WORD, EVENT_SENTENCE, EVENT_MARK, EVENT_PLAY, EVENT_END, EVENT_MSG_TERMINATED, \
    EVENT_PHONEME, EVENT_SAMPLERATE = range(9)
POS_CHARACTER = 1
CHARS_UTF8 = 1
PARAM_RATE, PARAM_VOLUME, PARAM_PITCH, PARAM_RANGE, PARAM_PUNCTUATION, PARAM_CAPITALS, PARAM_WORDGAP = range(1, 8)


class _Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Voice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _Id)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_LOCK = threading.Lock()
_LIB = None
_RATE = 0


@dataclass(frozen=True)
class Phone:
    start: float  # seconds
    end: float
    ipa: str  # IPA symbol(s) as espeak reports them ('' for a pause)

    @property
    def is_pause(self) -> bool:
        return self.ipa.strip() in ("", "_", "_:", "_!", "||", "|")


def _lib():
    global _LIB, _RATE
    if _LIB is None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            try:
                import pytest

                pytest.skip("libespeak-ng is not installed (apt-get install espeak-ng)")
            except ImportError:
                pass
            raise
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 200, None,
                                     INIT_PHONEME_EVENTS | INIT_PHONEME_IPA | INIT_DONT_EXIT)
        if rate <= 0:
            raise RuntimeError("espeak_Initialize failed")
        _LIB, _RATE = lib, rate
    return _LIB


def speak_with_phonemes(text: str, voice: str = "en-us", speed: int = 150, pitch: int | None = None,
                        gap: int | None = None) -> tuple[np.ndarray, int, list[Phone]]:
    """Synthesize `text`; return (mono float32 samples, sample rate, phones with exact times).

    `speed` is words per minute, `gap` extra pause between words in 10 ms units (like espeak-ng -g).
    """
    with _LOCK:
        lib = _lib()
        chunks: list[np.ndarray] = []
        events: list[tuple[int, str]] = []  # (ms, ipa)

        def cb(wav, n, ev):
            if wav and n > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            i = 0
            while ev[i].type != EVENT_LIST_TERMINATED:
                e = ev[i]
                if e.type == EVENT_PHONEME:
                    events.append((e.audio_position, e.id.string.decode("utf-8", "replace")))
                elif e.type in (EVENT_END, EVENT_MSG_TERMINATED, EVENT_SENTENCE, EVENT_WORD):
                    events.append((e.audio_position, None))
                i += 1
            return 0

        c_cb = _CALLBACK(cb)
        lib.espeak_SetSynthCallback(c_cb)
        if lib.espeak_SetVoiceByName(voice.encode()) != 0 and \
                lib.espeak_SetVoiceByProperties(ctypes.byref(_Voice(None, voice.encode(), None, 0, 0, 0, 0, 0, None))) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        lib.espeak_SetParameter(PARAM_RATE, int(speed), 0)
        lib.espeak_SetParameter(PARAM_PITCH, 50 if pitch is None else int(pitch), 0)
        lib.espeak_SetParameter(PARAM_WORDGAP, 0 if gap is None else int(gap), 0)
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data)
        lib.espeak_Synth(buf, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        rate = _RATE
    samples = (np.concatenate(chunks).astype(np.float32) / 32768.0) if chunks else np.zeros(0, np.float32)
    total = len(samples) / rate
    phones: list[Phone] = []
    marks = sorted(events, key=lambda e: e[0])
    # Each phoneme lasts until the next phoneme event (word/sentence/end marks close the last one).
    starts = [(ms / 1000.0, ipa) for ms, ipa in marks if ipa is not None and not ipa.startswith("(")]
    for k, (t0, ipa) in enumerate(starts):
        nxt = [s for s, _ in starts[k + 1:] if s > t0 + 1e-9]
        t1 = min(nxt[0] if nxt else total, total)
        if t1 > t0:
            phones.append(Phone(t0, t1, ipa))
    return samples, rate, phones


# ---- IPA -> target mouth openness (independent of the model's own viseme table) -------------
_OPEN = {
    # open vowels
    "a": 0.42, "ɑ": 0.42, "ɒ": 0.40, "æ": 0.36, "ɶ": 0.40, "ɐ": 0.34, "ä": 0.42,
    # open-mid
    "ɛ": 0.30, "œ": 0.28, "ɔ": 0.32, "ʌ": 0.32, "ɜ": 0.28, "ɞ": 0.28,
    # mid / close-mid
    "e": 0.22, "ø": 0.20, "o": 0.24, "ə": 0.22, "ɘ": 0.20, "ɵ": 0.20, "ɤ": 0.22, "ɚ": 0.20, "ɝ": 0.22,
    # near-close / close
    "ɪ": 0.16, "ʏ": 0.14, "ʊ": 0.14, "i": 0.12, "y": 0.10, "ɨ": 0.12, "ʉ": 0.10, "ɯ": 0.12, "u": 0.10,
}
_BILABIAL = set("pbmɓʙɸβ")
_LABIODENTAL = set("fvɱʋ")


def ipa_openness(ipa: str) -> float:
    """Target jaw opening (fraction of mouth width) of one IPA phone: vowels by height, p/b/m closed."""
    s = ipa.strip().lstrip("ˈˌ'")
    if not s or s[0] in "_|":
        return 0.0
    if s[0] in _BILABIAL:
        return 0.0
    if s[0] in _LABIODENTAL:
        return 0.03
    vals = [_OPEN[ch] for ch in s if ch in _OPEN]
    if vals:
        return float(max(vals))
    return 0.10  # other consonants: teeth nearly together


def ipa_is_bilabial(ipa: str) -> bool:
    s = ipa.strip().lstrip("ˈˌ'")
    return bool(s) and s[0] in _BILABIAL


_STOPS = set("pbtdkgɡcɟqʔ")


def stop_closures(phones: list[Phone], samples: np.ndarray, rate: int, max_back: float = 0.12,
                  quiet_db: float = 25.0) -> list[Phone]:
    """The phones with each stop starting at its closure instead of its release.

    espeak-ng reports a stop's phoneme event at the release burst: the closure before it
    (silence, or a faint voice bar) falls inside the previous phone's interval, so a truth
    taken from the events keeps the mouth open ~20-50 ms into every closure, whereas a
    stop's segment includes its closure (as TIMIT's pcl/p labels do). The search window runs
    from `max_back` s before the event (but not before 30 % into the previous phone) to the
    event; the closure is the run of 5 ms frames at least `quiet_db` below the window's loudest
    frame that ends at most 15 ms before the event; the previous phone then ends where the
    closure starts. Stops with no such quiet run (after a pause, or voiced through, as espeak's
    b/d/g between vowels are) keep their event time.
    """
    hop = max(1, rate // 200)
    x = np.asarray(samples, np.float64)
    nfr = len(x) // hop
    e = 10 * np.log10(np.add.reduceat(x[:nfr * hop] ** 2, np.arange(0, nfr * hop, hop)) / hop + 1e-12) if nfr else x[:0]
    out = list(phones)
    for k in range(1, len(out)):
        p, prev = out[k], out[k - 1]
        s = p.ipa.strip().lstrip("ˈˌ'")
        if not s or s[0] not in _STOPS or prev.is_pause:
            continue
        j = min(int(p.start * rate / hop), nfr)  # the frame holding the release event
        lo = max(int((p.start - max_back) * rate / hop), int((prev.start + 0.3 * (prev.end - prev.start)) * rate / hop), 0)
        if j - lo < 2:
            continue
        quiet = e[lo:j] < e[lo:j].max() - quiet_db
        last = [i for i in range(len(quiet) - 1, max(len(quiet) - 4, -1), -1) if quiet[i]]
        if not last:
            continue
        i = last[0]
        while i > 0 and quiet[i - 1]:
            i -= 1
        t = (lo + i) * hop / rate
        out[k - 1], out[k] = Phone(prev.start, t, prev.ipa), Phone(t, p.end, p.ipa)
    return out


def openness_track(phones: list[Phone], n: int, fps: float) -> np.ndarray:
    """Per-video-frame target openness: frame i covers [i/fps, (i+1)/fps), value = time-weighted mean."""
    out = np.zeros(n, np.float64)
    for p in phones:
        v = ipa_openness(p.ipa)
        if v <= 0:
            continue
        i0 = int(np.floor(p.start * fps))
        i1 = int(np.ceil(p.end * fps))
        for i in range(max(i0, 0), min(i1, n)):
            ov = min(p.end, (i + 1) / fps) - max(p.start, i / fps)
            if ov > 0:
                out[i] += v * ov * fps
    return out.astype(np.float32)
