"""CTC posteriors -> the viseme segments the motion model consumes.

Why: a *ForCTC checkpoint with a phoneme (espeak IPA) or letter vocabulary recognises what is
said in most languages, far better than the bundled English-only pocketsphinx. Its output is
turned into exactly what ``sonic_core/motion/phonetic.py`` already reads from pocketsphinx:
a list of ``(start_s, end_s, viseme_name)`` with names from ``motion/visemes.py``'s VISEMES,
diphthongs split 55 % / 45 % as ``_segments_from_phones`` does.

Decoding: greedy CTC (argmax per 20 ms frame, blank = pad token, repeats collapsed). CTC
emits a short *spike* per token rather than its full extent, so a token's segment runs from
its spike to the next token's onset, capped (``max_segment_s``, 0.3 s); what is left of a
gap is REST. Frame j spans [(320 j + 40) / 16000, (320 j + 360) / 16000) s: its 25 ms
receptive field is centred 12.5 ms after 20 j ms.

Vocabularies are recognised from their tokens (:func:`vocabulary_type`):
    phonemes  espeak IPA (facebook/wav2vec2-lv-60-espeak-cv-ft, wav2vec2-xlsr-53-espeak-cv-ft):
              stress, length, tie and diacritic marks are stripped, then each symbol maps by
              its articulation (the whole IPA vowel chart and the consonants of major languages;
              anything unknown is CONS).
    letters   Wav2Vec2ForCTC character models ("|" between words): English spelling with the
              common digraphs (th sh ch ph wh ng ck, oo ee ea ai ay oa oi oy au aw), a silent
              final e, and accented Latin letters by their base letter.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from ..audio.ipa import normalize as normalize_ipa
from ..errors import SonicInputError

NO_CTC_MESSAGE = (
    "Visemes need a *ForCTC checkpoint (Wav2Vec2ForCTC or HubertForCTC with its lm_head) whose vocab.json is "
    "espeak IPA phonemes (e.g. facebook/wav2vec2-lv-60-espeak-cv-ft, facebook/wav2vec2-xlsr-53-espeak-cv-ft) "
    "or letters (e.g. facebook/wav2vec2-base-960h, facebook/hubert-large-ls960-ft). "
)

# ------------------------------------------------------------------------------ IPA tables
# Vowels by height/backness/rounding (the full IPA chart): rounded -> OO/OW/AO, open -> AA, ...
_IPA_VOWELS: dict[str, tuple[str, ...]] = {
    # close
    "i": ("EE",), "y": ("OO",), "ɨ": ("EE",), "ʉ": ("OO",), "ɯ": ("EE",), "u": ("OO",),
    # near-close (ᵻ/ᵿ: espeak's reduced vowels)
    "ɪ": ("EE",), "ʏ": ("OO",), "ʊ": ("OO",), "ᵻ": ("EE",), "ᵿ": ("OO",),
    # close-mid
    "e": ("EH",), "ø": ("OW",), "ɘ": ("AH",), "ɵ": ("OW",), "ɤ": ("AH",), "o": ("OW",),
    # mid
    "ə": ("AH",),
    # open-mid
    "ɛ": ("EH",), "œ": ("AO",), "ɜ": ("ER",), "ɞ": ("AO",), "ʌ": ("AH",), "ɔ": ("AO",),
    # near-open (æ glides like ARPAbet AE in motion/visemes.py)
    "æ": ("EH", "AA"), "ɐ": ("AH",),
    # open
    "a": ("AA",), "ɶ": ("AO",), "ɑ": ("AA",), "ɒ": ("AO",),
    # r-coloured
    "ɚ": ("ER",), "ɝ": ("ER",),
}
_IPA_CONSONANTS: dict[str, tuple[str, ...]] = {}
for _chars, _vis in (
    ("pbmɓʙɸβʘ", "MBP"),  # bilabials (lips meet)
    ("fvɱʋ", "FV"),  # labiodentals (lower lip to upper teeth)
    ("θð", "TH"),
    ("ʃʒɕʑʂʐɧ", "SH"),  # post-alveolar / retroflex sibilants: lips forward
    ("wʍɥ", "W"),  # labial(-velar/-palatal) approximants
    ("ɹɻ", "R"),  # English-type r (rounded)
    ("lɫɬɮʎɭʟɺ", "L"),
    ("j", "EE"),
    ("tdnszkgɡŋhɦʔçʝxɣχʁrɾɽʀcɟɲɳɴʈɖqɢħʕʜʢʡɰɗʄɠʛǀǃǂǁ", "CONS"),
):
    for _c in _chars:
        _IPA_CONSONANTS[_c] = (_vis,)
# Multi-symbol consonants (affricates, double articulations), matched before single symbols.
_IPA_CLUSTERS: dict[str, tuple[str, ...]] = {
    "tʃ": ("SH",), "dʒ": ("SH",), "tɕ": ("SH",), "dʑ": ("SH",), "ʈʂ": ("SH",), "ɖʐ": ("SH",),
    "ts": ("CONS",), "dz": ("CONS",), "tθ": ("TH",), "dð": ("TH",),
    "pf": ("MBP", "FV"), "bv": ("MBP", "FV"), "kp": ("MBP",), "ɡb": ("MBP",), "gb": ("MBP",), "ŋm": ("MBP",),
}
_IPA_SPECIFIC = set("ɐɑɒæɓʙβɔɕçɗɖðʤəɘɚɛɜɝɞɟʄɡɠɢʛɦɧħɥʜɨɪʝɭɬɫɮʟɱɯɰŋɳɲɴøɵɸθœɶʘɹɺɾɻʀʁɽʂʃʈʧʉʊʋⱱʌɣɤʍχʎʏʑʐʒʔʡʕʢǀǁǂǃːˑˈˌᵻᵿ")

# ------------------------------------------------------------------------------ letter tables
_LETTERS: dict[str, tuple[str, ...]] = {
    "a": ("AA",), "b": ("MBP",), "c": ("CONS",), "d": ("CONS",), "e": ("EH",), "f": ("FV",), "g": ("CONS",),
    "h": ("CONS",), "i": ("EE",), "j": ("SH",), "k": ("CONS",), "l": ("L",), "m": ("MBP",), "n": ("CONS",),
    "o": ("OW",), "p": ("MBP",), "q": ("CONS",), "r": ("R",), "s": ("CONS",), "t": ("CONS",), "u": ("AH",),
    "v": ("FV",), "w": ("W",), "x": ("CONS",), "y": ("EE",), "z": ("CONS",),
    # letters that are not an accent on a base letter
    "ß": ("CONS",), "ø": ("OW",), "æ": ("EH", "AA"), "œ": ("AO",), "å": ("AO",), "ð": ("TH",), "þ": ("TH",),
    "ł": ("W",), "ü": ("OO",), "ö": ("OW",), "ä": ("EH",),
}
_DIGRAPHS: dict[str, tuple[str, ...]] = {
    "th": ("TH",), "sh": ("SH",), "ch": ("SH",), "ph": ("FV",), "wh": ("W",), "ng": ("CONS",), "ck": ("CONS",),
    "oo": ("OO",), "ee": ("EE",), "ea": ("EE",), "ai": ("EH", "EE"), "ay": ("EH", "EE"), "oa": ("OW", "OO"),
    "oi": ("AO", "EE"), "oy": ("AO", "EE"), "au": ("AO",), "aw": ("AO",), "qu": ("CONS", "W"),
}
_VOWEL_LETTERS = set("aeiouy")
_WORD_SEPARATORS = {"|", " ", "▁"}


def _is_special(tok: str) -> bool:
    return (tok.startswith("<") and tok.endswith(">")) or tok in ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def ipa_to_visemes(token: str) -> tuple[str, ...]:
    """One IPA token (a phone, an affricate or a diphthong) -> its viseme sequence; () for none."""
    if _is_special(token) or token in _WORD_SEPARATORS:
        return ()
    s = normalize_ipa(token).lower()
    out: list[str] = []
    i = 0
    while i < len(s):
        two = s[i:i + 2]
        if two in _IPA_CLUSTERS:
            vis, i = _IPA_CLUSTERS[two], i + 2
        else:
            ch = s[i]
            vis = _IPA_VOWELS.get(ch) or _IPA_CONSONANTS.get(ch) or ("CONS",)
            i += 1
        for v in vis:
            if not out or out[-1] != v:
                out.append(v)
    return tuple(out)


def letter_to_visemes(letter: str) -> tuple[str, ...]:
    """A single letter out of context (for per-frame posteriors): accents fall back to the base letter."""
    c = letter.lower()
    if c in _LETTERS:
        return _LETTERS[c]
    base = normalize_ipa(c)
    if base and base[0] in _LETTERS:
        return _LETTERS[base[0]]
    return ("CONS",) if base else ()


def vocabulary_type(vocab) -> str:
    """"phonemes" (IPA), "letters" (Latin alphabet characters) or "unsupported" (other scripts, word pieces)."""
    toks = [t for t in (vocab or []) if t and not _is_special(t) and t not in _WORD_SEPARATORS
            and not t.startswith("<unused_")]
    if not toks:
        return "unsupported"
    if any(ch in _IPA_SPECIFIC for t in toks for ch in t) or any(len(normalize_ipa(t)) > 1 for t in toks):
        return "phonemes"
    letters = [t for t in toks if len(t) == 1 and unicodedata.category(t).startswith("L")]
    if not letters or len(letters) < 0.6 * len(toks):
        return "unsupported"
    latin = sum(1 for t in letters if "LATIN" in unicodedata.name(t, ""))
    return "letters" if latin >= 0.8 * len(letters) else "unsupported"


def unavailable_reason(output) -> str | None:
    """Why an output cannot give visemes (None when it can): no CTC head, no vocab, or an unusable vocab."""
    if getattr(output, "logits", None) is None:
        return NO_CTC_MESSAGE + (
            f"This {getattr(output, 'kind', 'speech')} output has hidden states only (the checkpoint has no CTC head), "
            "so use its hidden states or the built-in recogniser for the mouth."
        )
    if not output.vocab:
        return NO_CTC_MESSAGE + "This checkpoint has a CTC head but no vocab.json; pass vocab= when loading it."
    vt = output.vocab_type or vocabulary_type(output.vocab)
    if vt == "unsupported":
        return NO_CTC_MESSAGE + "This checkpoint's vocabulary is neither IPA phonemes nor Latin letters."
    return None


# ------------------------------------------------------------------------------ CTC decoding
@dataclass(frozen=True)
class CTCToken:
    """One greedy CTC emission: token id/text, its spike's first and last frame, mean probability."""

    token_id: int
    token: str
    first_frame: int
    last_frame: int
    prob: float


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def ctc_greedy(logits: np.ndarray, vocab: list[str], blank_id: int = 0) -> list[CTCToken]:
    """Greedy CTC: argmax per frame, runs of the same id collapse, the blank separates repeats."""
    lg = np.asarray(logits)
    if lg.ndim != 2 or lg.shape[0] == 0:
        return []
    ids = lg.argmax(axis=1)
    probs = _softmax(lg)[np.arange(len(ids)), ids]
    out: list[CTCToken] = []
    j = 0
    n = len(ids)
    while j < n:
        k = j
        while k + 1 < n and ids[k + 1] == ids[j]:
            k += 1
        tid = int(ids[j])
        if tid != blank_id:
            tok = vocab[tid] if 0 <= tid < len(vocab) else f"<{tid}>"
            out.append(CTCToken(tid, tok, j, k, float(probs[j:k + 1].mean())))
        j = k + 1
    return out


def _frame_start(j: int, hop: int, rf: int, rate: int) -> float:
    return (j * hop + (rf - hop) / 2.0) / rate


@dataclass
class _Unit:
    onset: float  # seconds
    spike_end: float
    visemes: tuple[str, ...]
    label: str


def _units_phonemes(tokens: list[CTCToken], t0) -> list[_Unit]:
    units = []
    for tk in tokens:
        vis = ipa_to_visemes(tk.token)
        if vis:
            units.append(_Unit(t0(tk.first_frame), t0(tk.last_frame + 1), vis, tk.token))
    return units


def _units_letters(tokens: list[CTCToken], t0) -> list[_Unit]:
    words: list[list[CTCToken]] = [[]]
    for tk in tokens:
        if tk.token in _WORD_SEPARATORS:
            words.append([])
        elif not _is_special(tk.token) and normalize_ipa(tk.token):
            words[-1].append(tk)
    units: list[_Unit] = []
    for word in words:
        letters = [w.token.lower() for w in word]
        # Silent final e: after a consonant that follows a vowel ("make", "are"; "the", "she" keep it).
        if (len(letters) >= 3 and letters[-1] == "e" and letters[-2] not in _VOWEL_LETTERS
                and any(c in _VOWEL_LETTERS for c in letters[:-2])):
            word, letters = word[:-1], letters[:-1]
        i = 0
        wunits: list[_Unit] = []
        while i < len(word):
            pair = "".join(letters[i:i + 2])
            if len(pair) == 2 and pair in _DIGRAPHS:
                vis, span = _DIGRAPHS[pair], 2
            else:
                vis, span = letter_to_visemes(letters[i]), 1
            if vis:
                u = _Unit(t0(word[i].first_frame), t0(word[i + span - 1].last_frame + 1), vis,
                          "".join(letters[i:i + span]))
                # Double letters ("ll", "mm", "ss") are one sound: extend the previous unit.
                if wunits and wunits[-1].visemes == vis and wunits[-1].label[-1] == u.label[0]:
                    wunits[-1].spike_end = u.spike_end
                    wunits[-1].label += u.label
                else:
                    wunits.append(u)
            i += span
        units.extend(wunits)
    return units


def ctc_units(output, vocab_type: str | None = None) -> list[tuple[float, float, str, tuple[str, ...]]]:
    """Recognised units as (onset_s, spike_end_s, label, visemes): phones, or letters/digraphs."""
    reason = unavailable_reason(output)
    if reason:
        raise SonicInputError(reason)
    vt = vocab_type or output.vocab_type or vocabulary_type(output.vocab)
    blank = output.blank_id if output.blank_id is not None else 0
    tokens = ctc_greedy(output.logits, output.vocab, blank)

    def t0(j):
        return _frame_start(j, output.hop, output.receptive_field, output.sample_rate)

    units = _units_letters(tokens, t0) if vt == "letters" else _units_phonemes(tokens, t0)
    return [(u.onset, u.spike_end, u.label, u.visemes) for u in units]


def visemes_from_ctc(output, *, max_segment_s: float = 0.3, rest: bool = True,
                     vocab_type: str | None = None) -> list[tuple[float, float, str]]:
    """SpeechModelOutput with CTC logits -> [(start_s, end_s, viseme_name)], sorted, non-overlapping.

    Each unit's segment runs from its onset to the next unit's onset, at most `max_segment_s`
    (never shorter than its own spike); units with two visemes (diphthongs, æ, pf) split at 55 %.
    With ``rest`` the gaps (leading/trailing silence, pauses) are filled with REST, as
    pocketsphinx's SIL would be. Raises SonicInputError (saying which checkpoints work) when
    the output has no CTC head or no usable vocabulary.
    """
    units = ctc_units(output, vocab_type)
    end_of_clip = max(output.duration, units[-1][1] if units else 0.0)
    segs: list[tuple[float, float, str]] = []
    for i, (onset, spike_end, _label, vis) in enumerate(units):
        nxt = units[i + 1][0] if i + 1 < len(units) else end_of_clip
        end = min(nxt, max(onset + max_segment_s, spike_end))
        if end <= onset:
            continue
        if len(vis) == 1:
            parts = [(onset, end, vis[0])]
        else:
            cuts = [onset, onset + 0.55 * (end - onset)] if len(vis) == 2 else \
                list(np.linspace(onset, end, len(vis) + 1)[:-1])
            cuts.append(end)
            parts = [(cuts[k], cuts[k + 1], v) for k, v in enumerate(vis)]
        segs.extend(parts)
    if not rest:
        return segs
    out: list[tuple[float, float, str]] = []
    t = 0.0
    for a, b, v in segs:
        if a > t + 1e-9:
            out.append((t, a, "REST"))
        out.append((a, b, v))
        t = b
    if end_of_clip > t + 1e-9:
        out.append((t, end_of_clip, "REST"))
    return out


def viseme_posteriors(output) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Soft per-frame viseme probabilities from the CTC softmax: (names, probs [T, V], blank [T]).

    Each token's probability goes to its visemes (split evenly when it has several; letters out
    of context); the blank's probability is returned separately because CTC's blank means
    "no new token here", not silence. Rows of probs + blank sum to 1 (minus special tokens).
    """
    reason = unavailable_reason(output)
    if reason:
        raise SonicInputError(reason)
    # Imported here, not at module level: the motion package pulls in PyAV.
    from ..motion.visemes import VISEMES

    names = tuple(VISEMES)
    vt = output.vocab_type or vocabulary_type(output.vocab)
    p = _softmax(output.logits)
    col = {n: i for i, n in enumerate(names)}
    m = np.zeros((p.shape[1], len(names)))
    for tid, tok in enumerate(output.vocab[:p.shape[1]]):
        if tid == output.blank_id or _is_special(tok) or tok in _WORD_SEPARATORS:
            continue
        vis = letter_to_visemes(tok) if vt == "letters" else ipa_to_visemes(tok)
        for v in vis:
            m[tid, col[v]] += 1.0 / len(vis)
    blank = p[:, output.blank_id] if output.blank_id is not None else np.zeros(len(p))
    return names, (p @ m).astype(np.float32), blank.astype(np.float32)
