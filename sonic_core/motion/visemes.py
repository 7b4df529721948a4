"""Phones -> visemes -> mouth-shape targets (the mouth channels of `types.CHANNELS`).

A Rhubarb-Lip-Sync-like viseme set (MIT-licensed method, re-implemented): the mouth shapes a
2D animator would draw, each with targets in the rig's units (see `render/fields.py`):

    jaw_open   opening as a fraction of mouth width (0 = closed, ~0.42 = wide 'ah')
    lip_width  relative change of mouth width (+ = spread 'ee', - = narrow)
    pucker     0..1 rounding/protrusion ('oo', 'w')
    lip_tuck   0..1 lower lip under the upper teeth ('f', 'v')

Each viseme also has a *dominance* (how strongly it imposes its shape on its neighbours,
Cohen & Massaro 1993) and a minimum duration. Bilabials dominate totally: the lips must meet.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Viseme:
    name: str
    jaw_open: float
    lip_width: float = 0.0
    pucker: float = 0.0
    lip_tuck: float = 0.0
    dominance: float = 1.0  # relative weight in coarticulation blending
    closure: bool = False  # lips must meet (p, b, m)


VISEMES = {v.name: v for v in (
    Viseme("REST", 0.0, 0.0, 0.0, 0.0, 0.6),
    Viseme("MBP", 0.0, -0.02, 0.05, 0.0, 6.0, closure=True),
    Viseme("FV", 0.035, -0.02, 0.0, 1.0, 3.0),
    Viseme("TH", 0.09, 0.03, 0.0, 0.0, 1.5),
    Viseme("CONS", 0.10, 0.02, 0.0, 0.0, 0.35),  # t d n s z k g h y ng: jaw follows the vowels
    Viseme("SH", 0.09, -0.06, 0.55, 0.0, 1.5),  # sh zh ch jh: lips rounded forward
    Viseme("L", 0.17, 0.02, 0.0, 0.0, 0.6),
    Viseme("R", 0.12, -0.04, 0.45, 0.0, 1.0),
    Viseme("W", 0.06, -0.12, 1.0, 0.0, 2.5),
    Viseme("OO", 0.11, -0.10, 0.85, 0.0, 1.5),  # uw uh
    Viseme("EE", 0.12, 0.12, 0.0, 0.0, 1.2),  # iy ih y
    Viseme("EH", 0.26, 0.07, 0.0, 0.0, 1.0),  # eh ae(partly) ey-start
    Viseme("AH", 0.30, 0.02, 0.0, 0.0, 1.0),  # ah ax er-ish
    Viseme("AA", 0.42, 0.0, 0.0, 0.0, 1.0),  # aa ao-ish ay/aw start
    Viseme("AO", 0.34, -0.06, 0.45, 0.0, 1.0),  # ao
    Viseme("OW", 0.24, -0.08, 0.65, 0.0, 1.2),
    Viseme("ER", 0.16, -0.03, 0.35, 0.0, 1.0),
)}

# ARPAbet (CMU, pocketsphinx en-us) -> one or two visemes (diphthongs glide from the first to the second).
PHONE_VISEMES: dict[str, tuple[str, ...]] = {
    "SIL": ("REST",), "NOISE": ("REST",),
    "P": ("MBP",), "B": ("MBP",), "M": ("MBP",),
    "F": ("FV",), "V": ("FV",),
    "TH": ("TH",), "DH": ("TH",),
    "T": ("CONS",), "D": ("CONS",), "N": ("CONS",), "S": ("CONS",), "Z": ("CONS",), "K": ("CONS",),
    "G": ("CONS",), "NG": ("CONS",), "HH": ("CONS",), "Y": ("EE",),
    "SH": ("SH",), "ZH": ("SH",), "CH": ("SH",), "JH": ("SH",),
    "L": ("L",), "R": ("R",), "W": ("W",),
    "UW": ("OO",), "UH": ("OO",),
    "IY": ("EE",), "IH": ("EE",),
    "EH": ("EH",), "AE": ("EH", "AA"), "EY": ("EH", "EE"),
    "AH": ("AH",), "ER": ("ER",),
    "AA": ("AA",), "AO": ("AO",), "AY": ("AA", "EE"), "AW": ("AA", "OO"), "OY": ("AO", "EE"),
    "OW": ("OW", "OO"),
}

VOWEL_PHONES = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}


def visemes_of_phone(phone: str) -> tuple[str, ...]:
    return PHONE_VISEMES.get(phone.upper().rstrip("012"), ("CONS",))
