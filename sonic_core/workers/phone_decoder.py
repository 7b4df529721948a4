"""pocketsphinx allphone decoding, in-process or in a warm worker process.

pocketsphinx holds the GIL for its whole search (~20x real time on one core), so decoding in
threads neither parallelises nor lets other work (a second job, the renderer's Python side)
proceed. Run as a script, this file serves decoding requests (see `_serve.py`), importing
nothing but pocketsphinx, so several children decode consecutive pieces of the audio at
once on their own cores. It is executed by path (never `-m sonic_core...`), so the child
does not import the engine.

    python phone_decoder.py --serve IDLE_S   # request: int16 16 kHz PCM; reply: segment lines
    python phone_decoder.py < audio.s16le    # one-off: "PHONE start_frame end_frame prob" lines
    python phone_decoder.py --align          # forced alignment of a transcript's pieces (see align_pieces)
"""
from __future__ import annotations

import os
import sys

if __package__:
    from . import _serve
else:  # run by path: this folder is sys.path[0]
    import _serve

RATE = 16000


def make_decoder():
    """A fresh decoder per utterance: its live cepstral-mean estimate would otherwise carry over
    from the previous audio and make results depend on what was decoded before. Loading one
    takes ~0.1 s, so a serving child builds the next request's decoder while it waits."""
    from pocketsphinx import Decoder, get_model_path

    mp = get_model_path("en-us")
    return Decoder(hmm=os.path.join(mp, "en-us"), allphone=os.path.join(mp, "en-us-phone.lm.bin"),
                   lw=2.0, pip=0.5, beam=1e-40, pbeam=1e-40, samprate=RATE, loglevel="FATAL")


def decode(pcm: bytes | bytearray, decoder=None) -> list[tuple[str, int, int, float]]:
    """(phone, start frame, end frame inclusive, probability) at 100 frames/s for int16 PCM."""
    dec = decoder or make_decoder()
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    logmath = dec.get_logmath()
    return [(s.word, s.start_frame, s.end_frame, float(logmath.exp(s.prob))) for s in dec.seg()]


ALIGN_BEAMS = (1e-120, 1e-300)  # synthetic, fast or accented speech scores far below the model's training
# data: a search pruned at the first beam is tried once more at the second before the text counts as not fitting


def _cost(decoder, frames: int) -> float:
    """Mean acoustic log score per frame relative to the best senone (<= 0; 0 = the best possible)."""
    import math

    return sum(math.log(max(s.ascore, 1e-300)) for s in decoder.seg()) / max(frames, 1)


def align(pcm: bytes, words: list[list[str]]) -> tuple[list[tuple[str, int, int]] | None, float, float]:
    """Force-align `words` (ARPAbet phones per word) to int16 PCM: ([(phone, start frame, frames)] or
    None when the text cannot be fitted, the alignment's cost per frame, free phone recognition's)."""
    import tempfile

    from pocketsphinx import Decoder, get_model_path

    frames = len(pcm) // 2 // (RATE // 100)
    free = make_decoder()
    free.start_utt()
    free.process_raw(pcm, full_utt=True)
    free.end_utt()
    free_cost = _cost(free, frames)
    mp = get_model_path("en-us")
    for beam in ALIGN_BEAMS:
        with tempfile.TemporaryDirectory(prefix="sonic-align-") as tmp:
            path = os.path.join(tmp, "transcript.dict")
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(f"w{i} {' '.join(w)}\n" for i, w in enumerate(words))
            dec = Decoder(hmm=os.path.join(mp, "en-us"), dict=path, samprate=RATE, loglevel="FATAL", bestpath=False,
                          beam=beam, wbeam=beam, pbeam=beam)
        dec.set_align_text(" ".join(f"w{i}" for i in range(len(words))))
        dec.start_utt()
        dec.process_raw(pcm, full_utt=True)
        dec.end_utt()
        if dec.hyp() is not None:
            break
    else:
        return None, float("-inf"), free_cost
    cost = _cost(dec, frames)
    dec.set_alignment()
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    return [(ph.name, ph.start, ph.duration) for word in dec.get_alignment() for ph in word], cost, free_cost


def align_pieces(stream_in, stream_out) -> None:
    """`--align`: a JSON line [{"words": [[phones]...], "nbytes": N}, ...], then each piece's PCM;
    writes one JSON line [{"phones": [[name, start, frames]...] or null, "cost": c, "free": f}, ...]."""
    import json

    pieces = json.loads(stream_in.readline())
    out = []
    for piece in pieces:
        pcm = stream_in.read(piece["nbytes"])
        phones, cost, free = align(pcm, piece["words"])
        out.append({"phones": phones, "cost": cost if phones is not None else None, "free": free})
    stream_out.write(json.dumps(out).encode() + b"\n")
    stream_out.flush()


def format_segments(segs) -> str:
    return "".join(f"{word} {a} {b} {p!r}\n" for word, a, b, p in segs)


def parse_segments(text: str) -> list[tuple[str, int, int, float]]:
    out = []
    for line in text.splitlines():
        word, a, b, p = line.split()
        out.append((word, int(a), int(b), float(p)))
    return out


def _handle(stream, nbytes: int, decoder) -> bytes:
    pcm = bytearray(nbytes)
    _serve.read_into(stream, pcm)
    return format_segments(decode(pcm, decoder)).encode()


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        return _serve.serve(_handle, float(sys.argv[2]), prepare=make_decoder)
    if len(sys.argv) > 1 and sys.argv[1] == "--align":
        align_pieces(sys.stdin.buffer, sys.stdout.buffer)
        return 0
    sys.stdout.write(format_segments(decode(sys.stdin.buffer.read())))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
