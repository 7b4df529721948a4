"""pocketsphinx allphone decoding, in-process or in a warm worker process.

pocketsphinx holds the GIL for its whole search (~20x real time on one core), so decoding in
threads neither parallelises nor lets other work (a second job, the renderer's Python side)
proceed. Run as a script, this file serves decoding requests (see `_serve.py`), importing
nothing but pocketsphinx, so several children decode consecutive pieces of the audio at
once on their own cores. It is executed by path (never `-m sonic_core...`), so the child
does not import the engine.

    python phone_decoder.py --serve IDLE_S   # request: int16 16 kHz PCM; reply: segment lines
    python phone_decoder.py < audio.s16le    # one-off: "PHONE start_frame end_frame prob" lines
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
    sys.stdout.write(format_segments(decode(sys.stdin.buffer.read())))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
