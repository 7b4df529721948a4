#!/usr/bin/env python3
"""Synthesize the demo recording assets/speech.wav with espeak-ng (no downloads needed).

Two sentences with a pause between them (about 8 s), voice en-us at 150 words/min, written
as mono 16-bit WAV at espeak-ng's native 22050 Hz (~350 KB). The pause exercises the
"still in silence" behaviour; the mix of open vowels and p/b/m closures exercises lip sync.

    python tools/make_demo_speech.py [--out assets/speech.wav] [--voice en-us] [--speed 150]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import wave

TEXT = ("Hello, and welcome to Sonic. "
        "Give me one photo and a voice, and I will bring the picture to life.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "assets", "speech.wav"))
    ap.add_argument("--voice", default="en-us")
    ap.add_argument("--speed", type=int, default=150)
    ap.add_argument("--text", default=TEXT)
    args = ap.parse_args(argv)

    exe = shutil.which("espeak-ng")
    if exe is None:
        print("espeak-ng is not installed (apt-get install espeak-ng)", file=sys.stderr)
        return 1
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    # -g 2: 20 ms extra gap between words, a touch less rushed; sentence pauses come from the text.
    subprocess.run([exe, "-v", args.voice, "-s", str(args.speed), "-g", "2", "-w", out, args.text], check=True)
    with wave.open(out) as w:
        dur = w.getnframes() / float(w.getframerate())
        print(f"wrote {out}: {dur:.2f} s, {w.getframerate()} Hz, {w.getnchannels()} ch, "
              f"{os.path.getsize(out) / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
