"""pocketsphinx allphone decoding, usable in-process or as a tiny child process.

pocketsphinx holds the GIL for its whole search (~20x real time on one core), so decoding in
threads neither parallelises nor lets other work (a second job, the renderer's Python side)
proceed. Run as a script, this file decodes raw 16 kHz int16 PCM from stdin and writes one
line per phone segment to stdout, importing nothing but pocketsphinx: a child starts in
~0.1 s, so several can decode consecutive pieces of the audio at once on their own cores.
It is executed by path (never `-m sonic_core...`), so the child does not import the engine.

    python _phone_worker.py < audio.s16le   ->   "PHONE start_frame end_frame log_prob" lines
"""
from __future__ import annotations

import os
import sys

RATE = 16000


def make_decoder():
    """A fresh decoder per utterance: its live cepstral-mean estimate would otherwise carry over
    from the previous audio and make results depend on what was decoded before."""
    from pocketsphinx import Decoder, get_model_path

    mp = get_model_path("en-us")
    return Decoder(hmm=os.path.join(mp, "en-us"), allphone=os.path.join(mp, "en-us-phone.lm.bin"),
                   lw=2.0, pip=0.5, beam=1e-40, pbeam=1e-40, samprate=RATE, loglevel="FATAL")


def decode(pcm: bytes, decoder=None) -> list[tuple[str, int, int, float]]:
    """(phone, start frame, end frame inclusive, probability) at 100 frames/s for int16 PCM."""
    dec = decoder or make_decoder()
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    logmath = dec.get_logmath()
    return [(s.word, s.start_frame, s.end_frame, float(logmath.exp(s.prob))) for s in dec.seg()]


def main() -> int:
    pcm = sys.stdin.buffer.read()
    out = sys.stdout
    for word, a, b, p in decode(pcm):
        out.write(f"{word} {a} {b} {p!r}\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
