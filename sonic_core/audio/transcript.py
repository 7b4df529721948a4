"""Transcript-aligned phones: the user's text, phonemized and force-aligned to the audio.

Where the text is known (a TTS script, subtitles), recognising phones from the audio alone is
the weaker path: the aligner only has to decide *when* each known phone is spoken. Three steps:

1. `read_transcript`: plain text, a .txt file, or an SRT/WebVTT file whose cue times bound
   each line's alignment.
2. `phonemize`: espeak-ng (the `espeak-ng` program; Debian/Ubuntu `apt-get install espeak-ng`,
   macOS `brew install espeak-ng`) turns each word into IPA in the transcript's language, which
   `ipa.to_arpabet` maps to the English phone set. Without espeak-ng, English words are looked
   up in pocketsphinx's CMU dictionary.
3. `align`: pocketsphinx's Viterbi alignment of that phone sequence against its bundled en-us
   acoustic model, one cue at a time. For other languages this is an acoustic alignment
   through the nearest English phones: coarse phone identities, but the timing of vowels,
   closures and pauses, which is what the mouth needs.

A transcript that does not belong to the audio is refused, never used to mis-sync the mouth:
an alignment that does not reach the end of the text, an alignment whose acoustic score per
frame is far below free phone recognition's on the same audio (wrong words, wrong language),
or detected speech left over in the alignment's silences (missing sentences) each make
`align` return `ok=False` with the reason, and the motion model falls back to the audio.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SonicInputError
from .ipa import to_arpabet
from .phonemes import PhoneSegment

RATE = 16000
FRAME_RATE = 100
ALIGN_BEAM = 1e-120  # synthetic or accented speech scores far below the model's training data
MARGIN_S = 0.3  # audio around each subtitle cue that its alignment may use
# Mismatch limits (calibrated on the tuned espeak-ng voices, matched vs. shuffled and wrong-language text):
SCORE_RATIO = 3.5  # the alignment's acoustic cost per frame, over free phone recognition's
SCORE_GAP = 1.5e-3  # ... and at least this much worse (natural log per frame)
UNCOVERED = 0.4  # share of detected speech frames that the alignment calls silence
UNCOVERED_RUN_S = 0.8  # or one run of speech this long inside the alignment's silence


@dataclass(frozen=True)
class Cue:
    text: str
    start: float | None = None  # seconds; None: the whole audio
    end: float | None = None


@dataclass
class Alignment:
    phones: list[PhoneSegment] = field(default_factory=list)
    ok: bool = False
    reason: str = ""
    score_ratio: float = float("nan")
    uncovered: float = float("nan")


_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")


def _seconds(m: re.Match) -> float:
    h, mi, s, ms = m.groups()
    return int(h or 0) * 3600 + int(mi) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000.0


def parse_subtitles(text: str) -> list[Cue]:
    """Cues of an SRT or WebVTT file (markup tags and speaker labels removed)."""
    cues: list[Cue] = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = [ln for ln in block.strip().split("\n") if ln.strip()]
        for k, ln in enumerate(lines):
            if "-->" in ln:
                times = list(_TIME.finditer(ln))
                if len(times) < 2:
                    break
                body = " ".join(lines[k + 1:])
                body = " ".join(re.sub(r"<[^>]*>|\{[^}]*\}", " ", body).split())
                if body:
                    cues.append(Cue(body, _seconds(times[0]), _seconds(times[1])))
                break
    return cues


def read_transcript(value: str) -> list[Cue]:
    """`value` is a path (.txt, .srt, .vtt) or the text itself."""
    text, suffix = value, ""
    if len(value) < 4096 and "\n" not in value:
        p = Path(value).expanduser()
        try:
            is_file = p.is_file()
        except OSError:
            is_file = False
        if is_file:
            try:
                text, suffix = p.read_text(encoding="utf-8-sig"), p.suffix.lower()
            except (OSError, UnicodeDecodeError) as e:
                raise SonicInputError(f"Transcript '{value}' could not be read as UTF-8 text ({e}).") from None
    if suffix in (".srt", ".vtt") or ("-->" in text and _TIME.search(text)):
        cues = parse_subtitles(text)
        if not cues:
            raise SonicInputError(f"Transcript '{value}' looks like subtitles but has no cue with text.")
        return cues
    text = " ".join(text.split())
    if not text:
        raise SonicInputError("The transcript is empty; give the spoken text, a .txt file or an .srt/.vtt file.")
    return [Cue(text)]


def phonemize(text: str, language: str = "en-us") -> list[tuple[str, ...]]:
    """ARPAbet phones per word of `text` in `language` (an espeak-ng voice name, e.g. 'en-us', 'es', 'de')."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        if not language.lower().startswith("en"):
            raise SonicInputError(f"A '{language}' transcript needs espeak-ng to phonemize it; install it "
                                  "(apt-get install espeak-ng, or brew install espeak-ng), or leave the transcript out.")
        return _cmudict_words(text)
    proc = subprocess.run([exe, "-q", "--ipa", "-v", language], input=text, capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0 or "Failed to read voice" in proc.stderr:
        raise SonicInputError(f"espeak-ng has no language '{language}' for the transcript "
                              "(`espeak-ng --voices` lists them).")
    return [a for a in (to_arpabet(w) for w in proc.stdout.split()) if a]


def _cmudict_words(text: str) -> list[tuple[str, ...]]:
    from pocketsphinx import get_model_path

    words = re.findall(r"[a-z']+", text.lower())
    want = set(words)
    found: dict[str, tuple[str, ...]] = {}
    with open(os.path.join(get_model_path("en-us"), "cmudict-en-us.dict"), encoding="utf-8") as f:
        for line in f:
            w, _, phones = line.partition(" ")
            if w in want and w not in found:
                found[w] = tuple(phones.split())
    missing = sorted(want - set(found))
    if missing:
        raise SonicInputError(f"The transcript has words outside the English dictionary ({', '.join(missing[:5])}); "
                              "install espeak-ng to phonemize any word (apt-get install espeak-ng).")
    return [found[w] for w in words]


def _decoder(words: list[tuple[str, ...]], tmp: str):
    from pocketsphinx import Decoder, get_model_path

    path = os.path.join(tmp, "transcript.dict")
    with open(path, "w", encoding="utf-8") as f:
        for i, w in enumerate(words):
            f.write(f"w{i} {' '.join(w)}\n")
    mp = get_model_path("en-us")
    return Decoder(hmm=os.path.join(mp, "en-us"), dict=path, samprate=RATE, loglevel="FATAL", bestpath=False,
                   beam=ALIGN_BEAM, wbeam=ALIGN_BEAM, pbeam=ALIGN_BEAM)


def _cost(decoder, frames: int) -> float:
    """Mean acoustic log score per frame relative to the best senone (<= 0; 0 = the best possible)."""
    return sum(math.log(max(s.ascore, 1e-300)) for s in decoder.seg()) / max(frames, 1)


def _pcm(x: np.ndarray) -> bytes:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return (np.clip(x * (0.7 / max(peak, 1e-6)), -1, 1) * 32767).astype(np.int16).tobytes()


def _align_piece(x: np.ndarray, words, t0: float) -> tuple[list[PhoneSegment] | None, float, float]:
    """(phones, alignment cost, free recognition cost) of one stretch of audio."""
    from ..workers import phone_decoder

    pcm = _pcm(x)
    frames = len(pcm) // 2 // (RATE // FRAME_RATE)
    free = phone_decoder.make_decoder()
    free.start_utt()
    free.process_raw(pcm, full_utt=True)
    free.end_utt()
    free_cost = _cost(free, frames)
    with tempfile.TemporaryDirectory(prefix="sonic-align-") as tmp:
        dec = _decoder(words, tmp)
    dec.set_align_text(" ".join(f"w{i}" for i in range(len(words))))
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    if dec.hyp() is None:
        return None, float("-inf"), free_cost
    cost = _cost(dec, frames)
    dec.set_alignment()
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    phones = []
    for word in dec.get_alignment():
        for ph in word:
            name = ph.name.upper()
            name = "SIL" if name in ("SIL", "<SIL>") or name.startswith("+") else name
            phones.append(PhoneSegment(name, t0 + ph.start / FRAME_RATE, t0 + (ph.start + ph.duration) / FRAME_RATE))
    return phones, cost, free_cost


def align(mono16k: np.ndarray, cues: list[Cue], language: str = "en-us", speech: np.ndarray | None = None) -> Alignment:
    """Phones of `cues` aligned to the audio, or `ok=False` with why the transcript does not fit.

    `speech`: the detected speech per 10 ms frame, to find speech the transcript leaves out.
    """
    x = np.asarray(mono16k, np.float32)
    total = len(x) / RATE
    phones: list[PhoneSegment] = []
    cost = free = 0.0
    for k, cue in enumerate(cues):
        words = phonemize(cue.text, language)
        if not words:
            continue
        a = 0.0 if cue.start is None else max(0.0, cue.start - MARGIN_S)
        b = total if cue.end is None else min(total, cue.end + MARGIN_S)
        if b - a < 0.1:
            return Alignment(reason=f"subtitle cue {k + 1} ({cue.start:.2f}-{cue.end:.2f} s) lies outside the audio")
        seg, c, f = _align_piece(x[int(a * RATE): int(b * RATE)], words, a)
        where = f"subtitle cue {k + 1} ('{cue.text[:40]}')" if cue.start is not None else "the transcript"
        if seg is None:
            return Alignment(reason=f"{where} could not be aligned to the audio: its words do not fit the speech")
        phones += seg
        cost += c * (b - a)
        free += f * (b - a)
    if not phones:
        return Alignment(reason="the transcript has no words espeak-ng could phonemize")
    ratio = cost / min(free, -1e-9)
    out = Alignment(phones=phones, score_ratio=ratio)
    if ratio > SCORE_RATIO and (cost - free) / total < -SCORE_GAP:
        out.reason = (f"its phones fit the audio {ratio:.1f}x worse than free phone recognition does "
                      "(other words or another language than the speech)")
        return out
    if speech is not None and speech.any():
        spoken = np.zeros(len(speech), bool)
        for p in phones:
            if p.phone != "SIL":
                spoken[int(p.start * FRAME_RATE): int(np.ceil(p.end * FRAME_RATE))] = True
        left = speech & ~spoken
        out.uncovered = float(left.sum() / speech.sum())
        longest = max((j - i for i, j in _runs(left)), default=0) / FRAME_RATE
        if out.uncovered > UNCOVERED or longest > UNCOVERED_RUN_S:
            out.reason = (f"{100 * out.uncovered:.0f}% of the detected speech (up to {longest:.1f} s at a stretch) "
                          "has no words of the transcript: sentences are missing from it")
            return out
    out.ok = True
    return out


def _runs(mask: np.ndarray):
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1))
