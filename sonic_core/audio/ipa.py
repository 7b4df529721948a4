"""IPA phones (espeak-ng's phonemizer output, any language) -> CMU ARPAbet phones.

The viseme table (`motion/visemes.py`) and pocketsphinx's acoustic model both speak ARPAbet, so a
transcript phonemized by espeak-ng into IPA is mapped here onto the nearest English phones: vowels
by height, backness and rounding (what shapes the mouth), consonants by place and manner. Sounds
English lacks map to their closest English neighbour (a trilled r to R, a front rounded [y] to UW,
a bilabial fricative [β] to B), which keeps the lips right: the mapping is for mouth shapes and
alignment, not for pronunciation. Vowels map to the ARPAbet phone whose viseme is the one
`speech_models.visemes.ipa_to_visemes` gives the same IPA vowel (tests/test_lipsync_cross_voice.py
checks that they agree).
"""
from __future__ import annotations

import unicodedata

# Longest match first: diphthongs and affricates before their parts.
_MULTI = {
    "aɪ": ("AY",), "aʊ": ("AW",), "eɪ": ("EY",), "oʊ": ("OW",), "əʊ": ("OW",), "ɔɪ": ("OY",), "ɔʏ": ("OY",),
    "tʃ": ("CH",), "dʒ": ("JH",), "ts": ("T", "S"), "dz": ("D", "Z"), "tɕ": ("CH",), "dʑ": ("JH",),
    "tʂ": ("CH",), "ʈʂ": ("CH",), "pf": ("P", "F"), "aɪɚ": ("AY", "ER"), "aɪə": ("AY", "AH"),
    "iə": ("IY", "AH"), "eə": ("EH", "AH"), "ʊə": ("UH", "AH"), "ɪə": ("IH", "AH"),
}
_SINGLE = {
    # vowels
    "i": "IY", "ɪ": "IH", "ᵻ": "IH", "ɨ": "IH", "y": "UW", "ʏ": "UH", "e": "EH", "ɛ": "EH", "æ": "AE",
    "a": "AA", "ä": "AA", "ɐ": "AH", "ə": "AH", "ɜ": "ER", "ɚ": "ER", "ɝ": "ER", "ʌ": "AH", "ɑ": "AA",
    "ɒ": "AO", "ɔ": "AO", "ɞ": "AO", "ᵿ": "UH", "o": "OW", "ø": "OW", "œ": "AO", "ɶ": "AO", "u": "UW", "ʊ": "UH", "ɯ": "IY", "ʉ": "UW",
    "ɤ": "AH", "ɵ": "OW", "ɘ": "AH",
    # consonants
    "p": "P", "b": "B", "m": "M", "ɓ": "B", "ʙ": "B", "ɸ": "F", "β": "B", "f": "F", "v": "V", "ɱ": "M",
    "ʋ": "V", "θ": "TH", "ð": "DH", "t": "T", "d": "D", "n": "N", "s": "S", "z": "Z", "ɾ": "D", "r": "R",
    "ɹ": "R", "ɻ": "R", "l": "L", "ɫ": "L", "ɬ": "L", "ɮ": "L", "ʃ": "SH", "ʒ": "ZH", "ɕ": "SH", "ʑ": "ZH",
    "ʂ": "SH", "ɧ": "SH", "ʐ": "ZH", "ʈ": "T", "ɖ": "D", "ɳ": "N", "ɭ": "L", "c": "K", "ɟ": "G", "ɲ": "N", "ç": "HH",
    "ʝ": "Y", "j": "Y", "ʎ": "L", "k": "K", "g": "G", "ɡ": "G", "ŋ": "NG", "x": "HH", "ɣ": "G", "q": "K",
    "ɢ": "G", "χ": "HH", "ʁ": "R", "ʀ": "R", "ħ": "HH", "ʕ": "HH", "h": "HH", "ɦ": "HH", "ʔ": "SIL",
    "w": "W", "ɥ": "W", "ʍ": "W", "ɰ": "W",
}
def normalize(ipa: str) -> str:
    """Strip stress (ˈ ˌ), length (ː ˑ), ties (͡ ͜ and espeak's zero-width joiner), diacritics (̃ ̩ ̯ ...),
    modifier letters (ʰ ʲ ʷ) and punctuation, keeping the base symbols: "ˈaːɪ̯" -> "aɪ", "t͡ʃ" -> "tʃ"."""
    out = []
    for ch in unicodedata.normalize("NFD", ipa):
        cat = unicodedata.category(ch)
        if cat.startswith("L") and cat != "Lm":
            out.append(ch)
    return "".join(out)


def to_arpabet(ipa: str) -> tuple[str, ...]:
    """ARPAbet phones (no stress digits) for one IPA phone or phone string; () for a pause."""
    s = normalize(ipa)
    out: list[str] = []
    i = 0
    while i < len(s):
        for k in (3, 2):
            if s[i:i + k] in _MULTI:
                out += _MULTI[s[i:i + k]]
                i += k
                break
        else:
            p = _SINGLE.get(s[i])
            if p:
                if not (out and out[-1] == p and p in _VOWELS):  # long vowels written twice: one phone
                    out.append(p)
            i += 1
    return tuple(p for p in out if p != "SIL")


_VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}
