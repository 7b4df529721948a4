"""Training speech from Festival's diphone voices (Debian: festival + festvox-kdlpc16k,
festvox-italp16k, festvox-itapc16k, festvox-suopuhe-lj, festvox-suopuhe-mv), with Festival's own
segment times and phonetic features.

Diphone voices concatenate recorded human speech, so their spectra are much closer to a real
voice's than espeak-ng's formant synthesis; the viseme network trains on both. None of these
speakers is a held-out voice of benchmarks/lipsync_motion.py (flite's kal, awb, rms, slt).

Each segment is mapped to a representative ARPAbet phone from its phonetic features (vowel
height/frontness/rounding, consonant type/place), which the phonesets of these voices define
the same way; so Italian and Finnish segments get their mouth shapes without per-language tables.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

FESTIVAL = shutil.which("festival")
VOICES = ("ked_diphone", "lp_diphone", "pc_diphone", "suo_fi_lj_diphone", "hy_fi_mv_diphone")
_PAUSES = {"pau", "#", "sil", "h#", "_"}


def features_to_arpabet(name: str, vc: str, height: str, front: str, rnd: str, ctype: str, cplace: str) -> str:
    if name in _PAUSES:
        return "SIL"
    if vc == "+":
        h = {"1": "high", "2": "mid", "3": "low"}.get(height, "mid")
        rounded, back, frontal = rnd == "+", front == "3", front == "1"
        if h == "high":
            return "UW" if rounded or back else "IY" if frontal else "IH"
        if h == "mid":
            return "OW" if rounded else "EH" if frontal else "AH"
        return "AO" if rounded else "AE" if frontal else "AA"
    if cplace == "l":
        return {"s": "P", "n": "M", "f": "F", "r": "W"}.get(ctype, "P")
    if cplace == "b":
        return "F"
    if cplace == "d":
        return "TH"
    if ctype == "a":
        return "CH"
    if ctype == "l":
        return "L"
    if ctype == "r":
        return "Y" if cplace == "p" else "R"
    if ctype == "f" and cplace == "p":
        return "SH"
    return "T"


_SCRIPT = """(voice_{voice})
(Parameter.set 'Duration_Stretch {stretch})
{body}"""
_UTT = """(set! utt (Utterance Text "{text}"))
(utt.synth utt)
(utt.save.wave utt "{wav}" 'riff)
(format t "@@ {k}\\n")
(mapcar (lambda (s) (format t "%s %f %s %s %s %s %s %s\\n" (item.name s) (item.feat s "end") (item.feat s "ph_vc")
  (item.feat s "ph_vheight") (item.feat s "ph_vfront") (item.feat s "ph_vrnd") (item.feat s "ph_ctype")
  (item.feat s "ph_cplace"))) (utt.relation.items utt 'Segment))
"""


def synthesize(texts: list[str], voice: str, stretch: float = 1.0):
    """[(samples float32, rate, [(start, end, ARPAbet)])] for each text, one Festival process."""
    if FESTIVAL is None:
        raise RuntimeError("festival is not installed (apt-get install festival festvox-kdlpc16k ...)")
    with tempfile.TemporaryDirectory() as tmp:
        body = "".join(_UTT.format(text=t.replace('"', "").replace("\\", ""), wav=Path(tmp) / f"{k}.wav", k=k)
                       for k, t in enumerate(texts))
        script = Path(tmp) / "s.scm"
        script.write_text(_SCRIPT.format(voice=voice, stretch=f"{stretch:.3f}", body=body))
        out = subprocess.run([FESTIVAL, "--batch", str(script)], capture_output=True, text=True, timeout=600).stdout
        segs: dict[int, list] = {}
        cur = None
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "@@":
                cur = segs.setdefault(int(parts[1]), [])
            elif cur is not None and len(parts) == 8:
                cur.append((float(parts[1]), features_to_arpabet(parts[0], *parts[2:])))
        results = []
        for k in range(len(texts)):
            wav = Path(tmp) / f"{k}.wav"
            if k not in segs or not wav.is_file():
                results.append(None)
                continue
            with wave.open(str(wav)) as w:
                rate = w.getframerate()
                x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
            phones, start = [], 0.0
            for end, arp in segs[k]:
                if end > start:
                    phones.append((start, end, arp))
                start = end
            results.append((x, rate, phones))
        return results
