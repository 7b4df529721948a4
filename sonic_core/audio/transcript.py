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
   acoustic model, one cue at a time, in a child process (`workers/phone_decoder.py --align`: the
   search holds the GIL, which would stall the renderer and other jobs' threads). For other languages this is an acoustic alignment
   through the nearest English phones: coarse phone identities, but the timing of vowels,
   closures and pauses, which is what the mouth needs.

A transcript that does not belong to the audio is refused, never used to mis-sync the mouth:
an alignment that does not reach the end of the text, an alignment whose acoustic score per
frame is far below free phone recognition's on the same audio (wrong words, wrong language),
or detected speech left over in the alignment's silences (missing sentences) each make
`align` return `ok=False` with the reason, and the motion model falls back to the audio.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SonicInputError
from .ipa import to_arpabet
from .phonemes import NOISE_TOKENS, SILENCE_TOKENS, PhoneSegment, pcm16
from .vad import runs

log = logging.getLogger(__name__)
RATE = 16000
FRAME_RATE = 100
MARGIN_S = 0.3  # audio around each subtitle cue that its alignment may use
MAX_PIECE_S = 120.0  # longest stretch aligned at once (the alignment's memory grows with its length squared)
MAX_CHARS = 200_000  # longest transcript accepted
FILE_SUFFIXES = (".txt", ".srt", ".vtt")
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


_ANNOTATION = re.compile(r"<[^>]*>|\{[^}]*\}|\[[^\]]*\]|\([^)]*\)|[♪♫]|^\s*-\s+|^\s*[A-Z][A-Z .'-]{0,30}:\s+",
                         re.MULTILINE)


def _clean_cue(lines: list[str]) -> str:
    """Spoken words of a cue: markup, [sound] and (aside) annotations, music notes, dialogue dashes and
    SPEAKER: labels removed."""
    text = "\n".join(ln.strip() for ln in lines)
    for _ in range(3):  # "JOHN: - Hi": each removal can expose another at the line's start
        text = "\n".join(ln.strip() for ln in _ANNOTATION.sub(" ", text).split("\n"))
    return " ".join(text.split())


def parse_subtitles(text: str) -> list[Cue]:
    """Cues of an SRT or WebVTT file, in time order. A cue is its timing line and the lines after it
    up to the next timing line (a blank line is not needed; an SRT index before a timing line is dropped)."""
    cues: list[Cue] = []
    start = end = None
    body: list[str] = []

    def flush():
        words = _clean_cue(body)
        if start is not None and words and end > start:
            cues.append(Cue(words, start, end))

    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        times = list(_TIME.finditer(line)) if "-->" in line else []
        if len(times) >= 2:
            if body and body[-1].strip().isdigit():
                body.pop()  # the next cue's SRT index
            flush()
            start, end, body = _seconds(times[0]), _seconds(times[1]), []
        elif start is not None and line.strip() and not line.strip().upper().startswith(("NOTE", "STYLE")):
            body.append(line.strip())
    if body and body[-1].strip().isdigit():
        body.pop()
    flush()
    return sorted(cues, key=lambda c: c.start)


def looks_like_path(value) -> bool:
    """Whether `read_transcript` takes `value` for a file: a path object, or one line ending in .txt/.srt/.vtt."""
    if isinstance(value, os.PathLike):
        return True
    v = str(value).strip()
    return "\n" not in v and len(v) < 4096 and v.lower().endswith(FILE_SUFFIXES)


def read_transcript(value) -> list[Cue]:
    """`value` is the text itself, or the path of a .txt, .srt or .vtt file (a str or a path object)."""
    text, suffix = str(value), ""
    if looks_like_path(value):
        p = Path(os.fspath(value).strip())
        try:
            p = p.expanduser()
        except RuntimeError:
            pass
        if not p.is_file():
            raise SonicInputError(f"Transcript file '{p}' does not exist; give the path of a .txt, .srt or .vtt file, "
                                  "or the text itself.")
        try:
            text, suffix = p.read_text(encoding="utf-8-sig"), p.suffix.lower()
        except (OSError, UnicodeDecodeError) as e:
            raise SonicInputError(f"Transcript '{p}' could not be read as UTF-8 text ({e}).") from None
    if len(text) > MAX_CHARS:
        raise SonicInputError(f"The transcript is {len(text)} characters long; at most {MAX_CHARS} are accepted.")
    if suffix in (".srt", ".vtt") or ("-->" in text and _TIME.search(text)):
        cues = parse_subtitles(text)
        if not cues:
            raise SonicInputError(f"Transcript '{value}' looks like subtitles but has no cue with spoken text.")
        return cues
    text = " ".join(_clean_cue([text]).split())
    if not text:
        raise SonicInputError("The transcript is empty; give the spoken text, a .txt file or an .srt/.vtt file.")
    return [Cue(text)]


_LANGUAGE_SWITCH = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)*\)")  # espeak-ng's "(en)word(fr)" markers


def phonemize(text: str, language: str = "en-us") -> list[tuple[str, ...]]:
    """ARPAbet phones per word of `text` in `language` (an espeak-ng voice name, e.g. 'en-us', 'es', 'de')."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        if not language.lower().startswith("en"):
            raise SonicInputError(f"A '{language}' transcript needs espeak-ng to phonemize it; install it "
                                  "(apt-get install espeak-ng, or brew install espeak-ng), or leave the transcript out.")
        return _cmudict_words(text)
    try:
        proc = subprocess.run([exe, "-q", "--ipa", "-v", language], check=False, input=text, capture_output=True,
                              encoding="utf-8", errors="replace", timeout=30 + len(text) / 200)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SonicInputError(f"espeak-ng could not phonemize the transcript ({e}).") from None
    if proc.returncode != 0 or "Failed to read voice" in proc.stderr:
        raise SonicInputError(f"espeak-ng has no language '{language}' for the transcript "
                              "(`espeak-ng --voices` lists them).")
    words = _LANGUAGE_SWITCH.sub(" ", proc.stdout).split()
    return [a for a in (to_arpabet(w) for w in words) if a]


@functools.lru_cache(maxsize=1)
def _cmudict() -> dict[str, tuple[str, ...]]:
    from pocketsphinx import get_model_path

    out: dict[str, tuple[str, ...]] = {}
    with open(os.path.join(get_model_path("en-us"), "cmudict-en-us.dict"), encoding="utf-8") as f:
        for line in f:
            w, _, phones = line.partition(" ")
            out.setdefault(w, tuple(phones.split()))
    return out


def _cmudict_words(text: str) -> list[tuple[str, ...]]:
    words = re.findall(r"[a-z']+", text.lower())
    found = _cmudict()
    missing = sorted({w for w in words if w not in found})
    if missing:
        raise SonicInputError(f"The transcript has words outside the English dictionary ({', '.join(missing[:5])}); "
                              "install espeak-ng to phonemize any word (apt-get install espeak-ng).")
    return [found[w] for w in words]


def _pcm(x: np.ndarray) -> bytes:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return pcm16(x, 0.7 / max(peak, 1e-6))


def _align_pieces(pieces: list[tuple[bytes, list]]) -> list[dict]:
    """Force-align [(pcm, words)] in a child process (pocketsphinx holds the GIL for its whole search:
    in this process it would stall the renderer and other jobs' threads); in this process where no
    child can start."""
    import io
    import json
    import sys

    from ..workers import phone_decoder
    from ..workers.pool import TIMEOUT_S, child_env

    header = json.dumps([{"words": [list(w) for w in words], "nbytes": len(pcm)} for pcm, words in pieces]).encode()
    payload = header + b"\n" + b"".join(pcm for pcm, _ in pieces)
    try:
        proc = subprocess.run([sys.executable, "-u", os.path.abspath(phone_decoder.__file__), "--align"], input=payload,
                              capture_output=True, env=child_env(), timeout=TIMEOUT_S, check=False)
        if proc.returncode == 0:
            return json.loads(proc.stdout.decode().strip().splitlines()[-1])
        log.debug("alignment child failed: %s", proc.stderr.decode(errors="replace")[-300:])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        log.debug("alignment child failed (%s); aligning in this process", e)
    out = io.BytesIO()
    phone_decoder.align_pieces(io.BytesIO(payload), out)
    return json.loads(out.getvalue())


def align(mono16k: np.ndarray, cues: list[Cue], language: str = "en-us", speech: np.ndarray | None = None) -> Alignment:
    """Phones of `cues` aligned to the audio, or `ok=False` with why the transcript does not fit.

    `speech`: the detected speech per 10 ms frame, to find speech the transcript leaves out.
    Subtitle cues outside the audio (a full film's subtitles for its first minutes) are skipped.
    """
    x = np.asarray(mono16k, np.float32)
    total = len(x) / RATE
    phones: list[PhoneSegment] = []
    cost = free = 0.0
    inside = [c for c in cues if c.start is None or (c.start < total - 0.1 and c.end > 0)]
    if not inside:
        return Alignment(reason=f"none of its {len(cues)} subtitle cues lies within the audio's {total:.1f} s")
    pieces, spans = [], []
    for k, cue in enumerate(inside):
        a = 0.0 if cue.start is None else max(0.0, cue.start - MARGIN_S)
        b = total if cue.end is None else min(total, cue.end + MARGIN_S)
        where = (f"subtitle cue {k + 1} ({cue.start:.2f}-{cue.end:.2f} s, '{cue.text[:40]}')" if cue.start is not None
                 else "the transcript")
        if b - a > MAX_PIECE_S:
            return Alignment(reason=f"{where} spans {b - a:.0f} s of audio; aligning more than {MAX_PIECE_S:.0f} s at "
                             "once takes too much memory: give subtitles (.srt/.vtt) whose cues time each line")
        words = phonemize(cue.text, language)
        if words:
            pieces.append((_pcm(x[int(a * RATE): int(b * RATE)]), words))
            spans.append((a, b, where))
    for (a, b, where), res in zip(spans, _align_pieces(pieces) if pieces else []):
        if res["phones"] is None:
            return Alignment(reason=f"{where} could not be aligned to the audio: its words do not fit the speech")
        for name, f0, nf in res["phones"]:
            name = name.upper()
            name = "SIL" if name in SILENCE_TOKENS else "NOISE" if name in NOISE_TOKENS else name
            phones.append(PhoneSegment(name, a + f0 / FRAME_RATE, a + (f0 + nf) / FRAME_RATE))
        cost += res["cost"] * (b - a)
        free += res["free"] * (b - a)
    if not phones:
        return Alignment(reason="the transcript has no words espeak-ng could phonemize")
    ratio = cost / min(free, -1e-9)
    out = Alignment(phones=phones, score_ratio=ratio)
    if ratio > SCORE_RATIO and (cost - free) / max(total, 1e-9) < -SCORE_GAP:
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
        longest = max((j - i for i, j in runs(left, True)), default=0) / FRAME_RATE
        if out.uncovered > UNCOVERED or longest > UNCOVERED_RUN_S:
            out.reason = (f"{100 * out.uncovered:.0f}% of the detected speech (up to {longest:.1f} s at a stretch) "
                          "has no words of the transcript: sentences are missing from it")
            return out
    out.ok = True
    return out
