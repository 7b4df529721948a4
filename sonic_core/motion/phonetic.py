"""Phonetic motion model: speech -> visemes with coarticulation, plus a living head, eyes and brows.

    from sonic_core.motion import phonetic_motion
    track = phonetic_motion(mono, sample_rate, speech_features, dynamic_scale=1.0, motion_scale=1.0, seed=0)

Mouth (scaled by ``dynamic_scale``; 0 = the mouth never moves)
    1. Speech/silence: Silero VAD (bundled weights) or an energy fallback, at 10 ms; outside
       speech the mouth rests closed and still (no chatter on breaths or noise).
    2. Phones: pocketsphinx allphone decoding (bundled en-us model) -> Rhubarb-like visemes
       (`visemes.py`), blended with dominance functions (each segment imposes its shape on
       its neighbours with a weight decaying over ~45 ms; anticipation comes from the same
       functions reaching ahead of a segment). p/b/m closures are enforced: the jaw is 0 on at
       least one video frame per closure, i.e. an energy dip (or a short silent gap inside
       speech) that the recogniser calls p/b/m or whose release looks labial (low burst, or F2
       rising out of it); see `closure_frames`.
    3. Signal: loudness, voicing and a first-formant proxy (spectral centroid 200-1100 Hz,
       high for open vowels) give an acoustic opening that works for any language.
    4. The viseme network (`viseme_net.py`, shipped weights trained on generated speech): per
       10 ms, how likely each viseme is, from a speaker-normalised spectrogram. Its posterior-
       weighted shapes carry most of the jaw (`NET_MIX`: the rest is the recognised phones and
       the acoustic opening), its bilabial posterior closes the lips, and half of lip width,
       pucker and tuck. It follows voices and recordings the hand-made cues were not tuned on.
       Without the weights file, the jaw mixes the phonetic target and the acoustic opening.
    5. Transcript (optional): the user's text, force-aligned to the audio
       (`audio/transcript.py`), replaces the recognised phones when it fits the audio; a
       transcript that does not fit is reported in the track's `notes` and not used.
    Lip width, pucker (rounding) and lip tuck (f/v) come from the visemes (phones and network).

Head, eyes, brows (scaled by ``motion_scale``; 0 = still head, no brow raises)
    Head yaw/pitch/roll and translation = seeded smooth idle noise (never stops, also in
    pauses) + prosody: the pitch contour (autocorrelation F0, speaker-normalised) tilts
    the head up on high pitch, energy raises the motion amplitude, and each phrase end
    (a pause >= 0.3 s) brings a small nod that relaxes slowly (no snap back). Brows rise on
    emphasis (loud syllables with a pitch peak). Blinks: `blink_track` at ~11/min plus
    blinks at phrase boundaries (total ~14-18/min), 120-260 ms, full closure.

Timing: video frame i covers [i/fps, (i+1)/fps); every channel is the average of the
10 ms analysis over that interval (closures: the frame most covered by a closure is 0).

`inference_steps` is NOT used here: it is the renderer's cap on inverse-warp solver
iterations (see GenerateConfig); motion costs the same for any value.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from ..audio import vad as vad_mod
from ..audio.features import resample_mono
from ..errors import SonicInputError
from ..types import MOUTH_CHANNELS, MotionTrack, SpeechFeatures
from . import viseme_net
from .loudness import _attack_release, _smooth_noise, blink_track
from .visemes import VISEMES, visemes_of_phone

log = logging.getLogger(__name__)
RATE = 16000
AR = 100  # analysis frames per second
MAX_JAW = 0.42
COART_TAU_S = 0.045  # dominance decay outside a segment
PHONETIC_MIX = 0.3  # share of the phonetic jaw target (the rest is the acoustic opening)
# With the viseme network (motion/viseme_net.py), the jaw is a mix of the recognised phones',
# the acoustic opening and the network's (the rest); tuned on espeak-ng voices only.
NET_MIX = (0.2, 0.3)
ALIGNED_SHARE = 0.25  # with a fitting transcript: its aligned phones' share (the rest: the network)
LABIAL_POSTERIOR = 0.5  # an acoustic dip closes the lips where the network's MBP posterior exceeds this
NET_CLOSURE_FRAMES = 2  # ... and so does a run of this many 10 ms frames where MBP is its first choice (0: off)


# ------------------------------------------------------------------ acoustic analysis (100 Hz)
def _frames(x: np.ndarray, win: int, n: int, first: int = 0) -> np.ndarray:
    """Windows of `win` samples centred on (k + 0.5) / AR for frames k in [first, first + n),
    zero outside the signal (so a block of frames equals the same rows of one whole pass)."""
    hop = RATE // AR
    idx = (np.arange(first, first + n) * hop + hop // 2 - win // 2)[:, None] + np.arange(win)[None, :]
    inside = (idx >= 0) & (idx < len(x))
    return np.where(inside, np.asarray(x, np.float32)[np.clip(idx, 0, max(len(x) - 1, 0))], np.float32(0.0))


# Bands whose per-frame power sums `closure_frames` needs (the release burst; the second formant).
BURST_BAND = (200.0, 7000.0)
F2_BAND = (900.0, 2600.0)
VOWEL_BAND = (300.0, 2500.0)  # Hz: where vowels put their first two formants (see acoustic_features)
LABIAL_BURST_HZ = 1500.0  # p/b release bursts are low and diffuse; t, k centre higher
MAX_SILENT_CLOSURE = 30  # 10 ms frames: a silent gap this short inside speech may be a stop closure
SEAL = 0.6  # a video frame covered this much (of its interval) by a closure shows sealed lips


def acoustic_features(x: np.ndarray, block: int = 1024) -> dict[str, np.ndarray]:
    """Per 10 ms: dB level, normalised loudness 0..1, voicing 0..1, F0 (Hz, 0 unvoiced), F1 proxy 0..1,
    and the vowel-band share 0..1 (`vowel`: power in 300-2500 Hz over 100-7000 Hz).

    The vowel-band share separates vowels from loud consonants without a recogniser: a vowel
    puts most of its power into its first two formants, whereas a nasal murmur (m, n) sits
    below 300 Hz behind closed lips or a raised tongue, a fricative above 2.5 kHz, and a stop
    closure has little power anywhere but the voice bar. Loudness alone opens the mouth on
    every voiced consonant.

    Also, per frame, the power and the frequency-weighted power in the burst and F2 bands
    (`_burst_q/_burst_w`, `_f2_q/_f2_w`): a band centroid over any run of frames is then
    sum(w) / sum(q), so no spectrogram is kept. Frames are analysed in blocks of `block`,
    so memory is a few small arrays per frame, whatever the audio's length.
    """
    n = int(np.ceil(len(x) / RATE * AR))
    out = {k: np.zeros(n, np.float32) for k in ("db", "loud", "voiced", "f0", "f1", "vowel")}
    if n == 0:
        return out
    hann = np.hanning(400).astype(np.float32)
    f = np.fft.rfftfreq(1024, 1.0 / RATE)
    band = (f >= 200) & (f <= 1100)
    vowel_band, all_band = (f > VOWEL_BAND[0]) & (f < VOWEL_BAND[1]), (f > 100) & (f < 7000)
    bands = {name: (f >= lo_hz) & (f <= hi_hz) for name, (lo_hz, hi_hz) in (("burst", BURST_BAND), ("f2", F2_BAND))}
    lo, hi = RATE // 400, RATE // 70
    db = np.empty(n, np.float64)
    f1 = np.empty(n, np.float64)
    vowel = np.empty(n, np.float64)
    voiced = np.empty(n, np.float64)
    lag = np.empty(n, np.int64)
    sums = {f"_{b}_{k}": np.empty(n, np.float64) for b in bands for k in ("q", "w")}
    for a in range(0, n, block):
        m = min(block, n - a)
        fr = _frames(x, 400, m, first=a)  # 25 ms windows centred on (k + 0.5) / AR
        fr = fr - fr.mean(axis=1, keepdims=True)
        db[a:a + m] = 10 * np.log10(np.mean(fr.astype(np.float64) ** 2, axis=1) + 1e-12)
        p = np.abs(np.fft.rfft(fr * hann, n=1024, axis=1)) ** 2
        cen = (p[:, band] * f[band]).sum(1) / np.maximum(p[:, band].sum(1), 1e-12)
        f1[a:a + m] = np.clip((cen - 350.0) / (750.0 - 350.0), 0.0, 1.0)
        vowel[a:a + m] = p[:, vowel_band].sum(1) / np.maximum(p[:, all_band].sum(1), 1e-12)
        for b, sel in bands.items():
            sums[f"_{b}_q"][a:a + m] = p[:, sel].sum(1)
            sums[f"_{b}_w"][a:a + m] = (p[:, sel] * f[sel]).sum(1)
        ac = np.fft.irfft(p, axis=1)[:, :400]
        lg = lo + np.argmax(ac[:, lo:hi], axis=1)
        lag[a:a + m] = lg
        voiced[a:a + m] = np.clip(ac[np.arange(m), lg] / np.maximum(ac[:, 0], 1e-12), 0, 1)
    loud_db = db[db > -70]
    if loud_db.size < 3:
        return out
    peak = float(np.percentile(loud_db, 95))
    floor = max(float(np.percentile(db, 10)), peak - 50.0)
    loud = np.clip((db - (peak - 35.0)) / 35.0, 0.0, 1.0)
    loud[db < floor + 3.0] = 0.0
    f0 = np.where(voiced > 0.45, RATE / lag, 0.0)
    out.update(db=db.astype(np.float32), loud=loud.astype(np.float32), voiced=voiced.astype(np.float32),
               f0=f0.astype(np.float32), f1=f1.astype(np.float32), vowel=vowel.astype(np.float32), **sums)
    return out


# ------------------------------------------------------------------ phones -> viseme channels
def _segments_from_phones(phones) -> list[tuple[float, float, str]]:
    """(start, end, viseme) with diphthongs split into two halves."""
    segs = []
    for ph in phones:
        vis = visemes_of_phone(ph.phone)
        if len(vis) == 1:
            segs.append((ph.start, ph.end, vis[0]))
        else:
            mid = ph.start + 0.55 * (ph.end - ph.start)
            segs.append((ph.start, mid, vis[0]))
            segs.append((mid, ph.end, vis[1]))
    return segs


def viseme_channels(segs, n: int, speech: np.ndarray) -> dict[str, np.ndarray]:
    """Dominance-blended targets per 10 ms frame (Cohen-Massaro coarticulation)."""
    t = (np.arange(n) + 0.5) / AR
    num = {c: np.zeros(n) for c in MOUTH_CHANNELS}
    den = np.full(n, 1e-6)
    for a, b, name in segs:
        v = VISEMES[name]
        i0, i1 = max(0, int((a - 0.25) * AR)), min(n, int((b + 0.25) * AR) + 1)
        if i1 <= i0:
            continue
        tt = t[i0:i1]
        dist = np.maximum(0.0, np.maximum(a - tt, tt - b))
        # Anticipation: shapes reach further ahead (before the segment) than they linger after it.
        tau = np.where(tt < a, COART_TAU_S * 1.3, COART_TAU_S)
        d = v.dominance * np.exp(-dist / tau)
        den[i0:i1] += d
        for c in MOUTH_CHANNELS:
            num[c][i0:i1] += d * getattr(v, c)
    out = {c: (num[c] / den).astype(np.float32) for c in MOUTH_CHANNELS}
    for c in MOUTH_CHANNELS:
        out[c][~speech] = 0.0
    return out


def _band_centroid(feats: dict, band: str, i: int, j: int) -> float:
    """Power-weighted mean frequency of a band (`burst` or `f2`) over 10 ms frames [i, j)."""
    return float(feats[f"_{band}_w"][i:j].sum() / max(feats[f"_{band}_q"][i:j].sum(), 1e-12))


def _short_gaps(speech: np.ndarray, max_len: int) -> np.ndarray:
    """Non-speech runs of at most `max_len` frames with speech on both sides."""
    out = np.zeros(len(speech), bool)
    for i, j in vad_mod.runs(speech, False):
        if i > 0 and j < len(speech) and j - i <= max_len:
            out[i:j] = True
    return out


def closure_frames(segs, n: int, feats: dict, speech: np.ndarray, labial: np.ndarray | None = None) -> list[tuple[int, int]]:
    """10 ms frame ranges where the lips close (p, b, m), from acoustics + the recogniser.

    Candidates are level dips inside speech (a stop's closure or a nasal murmur: >= 6 dB
    below the louder sounds on both sides within 120 ms), including short silent gaps
    (<= 0.3 s with speech on both sides: a voiceless stop's closure can be silent enough
    for the VAD to call it a pause). A dip closes the lips when the recogniser heard p/b/m
    there (a dip of >= 4 dB is enough), or when textbook labial cues agree: the release
    burst is low and diffuse (centroid below ~1.5 kHz; t bursts centre above ~3.5 kHz and
    k bursts near 2 kHz), or the second formant rises out of the dip (the low F2 locus of
    labials) after a burst that is not high.
    """
    db = feats["db"]
    spectral = "_f2_q" in feats
    rec = np.zeros(n, bool)
    for a, b, name in segs:
        if VISEMES[name].closure:
            rec[max(0, int(a * AR) - 4): min(n, int(np.ceil(b * AR)) + 4)] = True
    if labial is not None:
        rec |= labial
    sm = np.convolve(db, np.ones(3) / 3, mode="same")
    inner = speech | _short_gaps(speech, MAX_SILENT_CLOSURE)
    out = []
    w = 12
    for k in range(1, n - 1):
        if not inner[k] or not (sm[k] <= sm[k - 1] and sm[k] < sm[k + 1]):
            continue
        left = sm[max(0, k - w): k].max(initial=-200)
        right = sm[k + 1: k + 1 + w].max(initial=-200)
        depth = min(left, right) - sm[k]
        if depth < 4.0:
            continue
        # Extent of the dip: frames within half its depth of the minimum.
        half = sm[k] + depth / 2
        i0 = k
        while i0 > 0 and sm[i0 - 1] < half and k - i0 < w:
            i0 -= 1
        i1 = k + 1
        while i1 < n and sm[i1] < half and i1 - k < w:
            i1 += 1
        labial = bool(rec[i0:i1].any())
        if not labial and depth >= 6.0 and spectral and i1 + 10 < n:
            burst = _band_centroid(feats, "burst", i1, i1 + 2)
            f2_onset = _band_centroid(feats, "f2", i1 + 1, i1 + 4)
            f2_later = _band_centroid(feats, "f2", i1 + 6, i1 + 10)
            labial = burst < LABIAL_BURST_HZ or ((f2_later - f2_onset) > 120.0 and burst < 2200.0)
        if labial:
            out.append((i0, i1))
    return out


def _to_video(x: np.ndarray, n_video: int, fps: float) -> np.ndarray:
    """Average of a 100 Hz signal over each video frame's interval [i/fps, (i+1)/fps)."""
    cs = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    edges = np.arange(n_video + 1) / fps * AR
    edges = np.clip(edges, 0, len(x))

    def interp_cs(e):
        k = np.clip(np.floor(e).astype(int), 0, len(x) - 1) if len(x) else np.zeros_like(e, int)
        return cs[k] + (e - k) * (x[k] if len(x) else 0)

    lo, hi = interp_cs(edges[:-1]), interp_cs(edges[1:])
    width = np.maximum(edges[1:] - edges[:-1], 1e-9)
    out = (hi - lo) / width
    out[edges[1:] - edges[:-1] <= 1e-9] = x[-1] if len(x) else 0.0
    return out.astype(np.float32)


# ------------------------------------------------------------------ head / eyes / brows
def _pauses(speech_v: np.ndarray, fps: float, min_s: float = 0.3) -> list[tuple[int, int]]:
    """Non-speech runs of at least `min_s` after some speech (the clip's lead-in is no phrase end)."""
    return [(i, j) for i, j in vad_mod.runs(speech_v, False) if i > 0 and (j - i) >= min_s * fps]


def head_and_face(feats_v: dict, speech_v: np.ndarray, fps: float, rng: np.random.Generator, blinks: bool):
    n = len(speech_v)
    loud = feats_v["loud"]
    energy = _attack_release(np.where(speech_v, loud, 0.0).astype(np.float64), fps, 0.15, 0.8)
    # Speaker-normalised pitch in semitones around the median, held through pauses.
    f0 = feats_v["f0"]
    ok = (f0 > 60) & speech_v
    pitch = np.zeros(n)
    if ok.sum() > 5:
        st = 12 * np.log2(np.maximum(f0, 1) / np.median(f0[ok]))
        last = 0.0
        for i in range(n):
            if ok[i]:
                last = float(np.clip(st[i], -6, 6))
            pitch[i] = last
        pitch = _attack_release(pitch, fps, 0.25, 0.25)
    noise = _smooth_noise(rng, n, fps, 3.5, 5)
    slow = _smooth_noise(rng, n, fps, 9.0, 3)
    amp = (0.55 + 0.6 * energy)[:, None]
    rot = noise[:, :3] * np.radians([2.6, 1.6, 1.3]) * amp + slow * np.radians([1.5, 1.0, 0.8])
    rot[:, 1] -= np.radians(0.35) * pitch  # image y down: negative pitch = chin up on high pitch
    rot[:, 1] += np.radians(1.5) * (energy - energy.mean())  # nod with emphasis
    # Phrase ends: a small nod that relaxes over ~1 s (the head keeps drifting meanwhile).
    nod = np.zeros(n)
    pauses = _pauses(speech_v, fps)
    for a, _ in pauses:
        k = np.arange(a, min(n, a + int(2.0 * fps)))
        tt = (k - a) / fps
        nod[k] += np.radians(1.2) * (tt / 0.25) * np.exp(1 - tt / 0.25) * rng.uniform(0.6, 1.2)
    rot[:, 1] += nod
    trans = noise[:, 3:5] * 0.007 * amp + slow[:, :2] * 0.004
    # Brows: emphasis = loud frames on a local pitch/energy peak, at most one raise per ~1.2 s.
    emph = np.clip(loud - 0.55, 0, None) * 2 + np.clip(pitch, 0, None) / 6.0
    emph = np.where(speech_v, emph, 0.0)
    brow = np.zeros(n)
    order = np.argsort(-emph)
    picked = []
    for i in order:
        if emph[i] < 0.35:
            break
        if all(abs(i - j) > 1.2 * fps for j in picked):
            picked.append(i)
    for i in picked:
        k = np.arange(max(0, i - int(0.12 * fps)), min(n, i + int(0.9 * fps)))
        tt = (k - i) / fps
        shape = np.where(tt < 0, 1 + tt / 0.12, np.where(tt < 0.3, 1.0, np.exp(-(tt - 0.3) / 0.2)))
        brow[k] = np.maximum(brow[k], np.clip(shape, 0, 1) * min(1.0, 0.5 + emph[i] / 2))
    if blinks:
        blink = blink_track(n, fps, rng, per_minute=11.0)
        for a, _ in pauses:
            t0 = a + int(rng.uniform(0.0, 0.15) * fps)
            lo, hi = max(0, t0 - int(1.0 * fps)), min(n, t0 + int(1.0 * fps))
            if t0 >= n or blink[lo:hi].max() > 0 or rng.uniform() > 0.6:
                continue
            dur = rng.uniform(0.12, 0.26)
            i0, i1 = t0, t0 + dur * fps
            idx = np.arange(int(i0), min(int(np.ceil(i1)) + 1, n))
            ph = (idx - i0) / max(i1 - i0, 1e-6)
            shape = np.where(ph < 0.35, ph / 0.35, np.where(ph < 0.55, 1.0, 1.0 - (ph - 0.55) / 0.45))
            blink[idx] = np.maximum(blink[idx], np.clip(shape, 0, 1))
    else:
        blink = np.zeros(n, np.float32)
    return rot, trans, brow, blink.astype(np.float32)


# ------------------------------------------------------------------ the model
def analyze(mono: np.ndarray, sample_rate: int, vad_backend: str = "auto", phones: bool = True,
            phone_job=None, segments: list | None = None, vad_device=None, transcript=None,
            transcript_language: str = "en-us") -> dict:
    """Everything the phonetic model reads from the audio, at 100 Hz (cache-able, seed-free).

    `phone_job`: an `audio.phonemes.PhoneJob` already started on this audio (the pipeline
    starts it right after decoding, so recognition overlaps face and renderer setup);
    otherwise one is started here, before the acoustic features and VAD, which then overlap it.
    `segments`: [(start_s, end_s, viseme)] from another recogniser (a Wav2Vec2/HuBERT CTC
    checkpoint, `speech_models`), used instead of pocketsphinx.
    `transcript`: the spoken text (a string, a path to .txt/.srt/.vtt, or `audio.transcript.Cue`s)
    in `transcript_language`; its phones are force-aligned to the audio and used instead of
    recognised ones, unless the alignment shows that the text does not belong to the audio:
    then the recognised phones are used and `notes` says why.
    """
    from ..audio.phonemes import PhoneJob

    x = np.asarray(mono, np.float32)
    if sample_rate != RATE:
        x = resample_mono(x, sample_rate, RATE)
    if segments is not None:
        phones, phone_job = False, None
    elif phones and phone_job is None:
        phone_job = PhoneJob(x)
    feats = acoustic_features(x)
    n = len(feats["db"])
    prob = vad_mod.speech_probability(x, vad_backend, device=vad_device)
    prob = np.pad(prob, (0, max(0, n - len(prob))))[:n]
    speech = vad_mod.speech_mask(prob) & (feats["db"] > -75)
    segs = list(segments) if segments is not None and speech.any() else []
    notes: list[str] = []
    aligned = None
    if transcript is not None and speech.any():
        aligned, note = _align_transcript(x, transcript, transcript_language, speech)
        notes += [note] if note else []
    if aligned is not None:
        segs = _segments_from_phones(aligned)
        if phone_job is not None:
            phone_job.cancel()
    elif phones and phone_job is not None:
        ph = phone_job.result()
        segs = _segments_from_phones(ph) if ph and speech.any() else []
    net = viseme_net.recognizer()
    post = net.posteriors(x)[:n] if net is not None and speech.any() else None
    return {"feats": feats, "speech": speech, "vad_prob": prob, "segments": segs, "n": n, "notes": notes,
            "visemes": post, "aligned": aligned is not None}


def _align_transcript(x: np.ndarray, transcript, language: str, speech: np.ndarray):
    """(aligned phones or None, a note for the user or '')."""
    from ..audio import transcript as tr

    try:
        cues = tr.read_transcript(transcript) if isinstance(transcript, (str, os.PathLike)) else list(transcript)
        al = tr.align(x, cues, language, speech)
    except SonicInputError as e:  # e.g. a later cue's words outside the dictionary: the audio path goes on
        al = tr.Alignment(reason=str(e).rstrip("."))
    if al.ok:
        return al.phones, ""
    note = f"transcript not used: {al.reason}; the lips follow the audio alone"
    log.warning(note)
    return None, note


def net_channels(post: np.ndarray) -> dict[str, np.ndarray]:
    """Mouth channels at 100 Hz as the posterior-weighted mean of the visemes' targets."""
    table = np.array([[getattr(VISEMES[v], c) for c in MOUTH_CHANNELS] for v in viseme_net.CLASSES], np.float32)
    y = post @ table
    return {c: y[:, i] for i, c in enumerate(MOUTH_CHANNELS)}


def mouth_channels(an: dict) -> dict[str, np.ndarray]:
    """Mouth channels at 100 Hz (unscaled) + the closure ranges."""
    feats, speech, segs, n = an["feats"], an["speech"], an["segments"], an["n"]
    loud, f1, voiced, vowel = feats["loud"], feats["f1"], feats["voiced"], feats["vowel"]
    # The loudness that opens the mouth (the acoustic opening below, and the phonetic jaw's
    # loudness modulation) is weighted by the vowel-band share: voiced consonants are loud too,
    # but their power lies elsewhere. sqrt(loud * vowel**2) = sqrt(loud) * vowel: linear in it.
    loud = loud * vowel ** 2
    acoustic = MAX_JAW * np.sqrt(loud) * (0.45 + 0.55 * f1) * (0.6 + 0.4 * np.clip(voiced * 1.5, 0, 1))
    post = an.get("visemes")
    ch = viseme_channels(segs, n, speech) if segs else None
    phon = ch["jaw_open"] * (0.55 + 0.45 * np.sqrt(loud)) if segs else None
    if post is not None:
        net = net_channels(post)
        mbp = post[:, viseme_net.CLASSES.index("MBP")]
        if ch is None:
            ch = net
        else:  # shapes: what the phones say, and what the network hears
            ch = {c: 0.5 * (ch[c] + net[c]) for c in MOUTH_CHANNELS}
        if an.get("aligned"):
            jaw = ALIGNED_SHARE * phon + (1 - ALIGNED_SHARE) * net["jaw_open"]
        else:
            w_phon = NET_MIX[0] if phon is not None else 0.0
            jaw = (w_phon * (phon if phon is not None else 0.0) + NET_MIX[1] * acoustic
                   + (1 - w_phon - NET_MIX[1]) * net["jaw_open"])
        jaw = jaw * (1 - mbp)  # the lips meet as surely as the network hears a bilabial
        closures = closure_frames(segs, n, feats, speech, labial=mbp > LABIAL_POSTERIOR)
        if NET_CLOSURE_FRAMES:
            heard = (post.argmax(1) == viseme_net.CLASSES.index("MBP")) & speech
            closures += [(i, j) for i, j in vad_mod.runs(heard, True) if j - i >= NET_CLOSURE_FRAMES]
        if an.get("aligned"):  # the text says where the bilabials are: no acoustic dip needed
            closures += [(int(a * AR), max(int(a * AR) + 1, int(np.ceil(b * AR)))) for a, b, v in segs
                         if VISEMES[v].closure]
    elif segs:
        jaw = PHONETIC_MIX * phon + (1 - PHONETIC_MIX) * acoustic
        closures = closure_frames(segs, n, feats, speech)
    else:
        ch = {c: np.zeros(n, np.float32) for c in MOUTH_CHANNELS}
        ch["lip_width"] = (-0.08 * acoustic / MAX_JAW).astype(np.float32)
        jaw = acoustic
        closures = []
    jaw = np.where(speech, jaw, 0.0)
    # Soft edges at speech on/offsets (10 ms attack, 40 ms release) so the mouth does not pop.
    jaw = np.minimum(jaw, _attack_release(jaw, AR, 0.012, 0.04))
    return {**ch, "jaw_open": jaw.astype(np.float32), "closures": closures}


def phonetic_motion(mono: np.ndarray, sample_rate: int, speech: SpeechFeatures | None = None, *,
                    fps: float | None = None, num_frames: int | None = None, dynamic_scale: float = 1.0,
                    motion_scale: float = 1.0, seed: int = 0, blinks: bool = True,
                    analysis: dict | None = None, phone_job=None, segments: list | None = None,
                    vad_device=None, transcript=None, transcript_language: str = "en-us") -> MotionTrack:
    """Speech waveform -> MotionTrack (see the module docstring). `vad_device`: where the
    speech detector runs (None: the CPU; a GPU job passes its device)."""
    fps = float(speech.fps if speech is not None else fps)
    nv = int(speech.num_frames if speech is not None else num_frames)
    an = analysis if analysis is not None else analyze(mono, sample_rate, phone_job=phone_job, segments=segments,
                                                       vad_device=vad_device, transcript=transcript,
                                                       transcript_language=transcript_language)
    m = mouth_channels(an)

    def v(x):
        y = _to_video(np.asarray(x, np.float64), nv, fps) if len(x) else np.zeros(nv, np.float32)
        return np.pad(y, (0, max(0, nv - len(y))))[:nv]

    jaw, width, pucker, tuck = v(m["jaw_open"]), v(m["lip_width"]), v(m["pucker"]), v(m["lip_tuck"])
    # Closures: the video frame most covered by each p/b/m closure shows closed lips, and so
    # does every frame the closure covers for most of its interval (a long "m" stays sealed).
    for i0, i1 in m["closures"]:
        a, b = i0 / AR, i1 / AR
        k0, k1 = int(np.floor(a * fps)), int(np.floor((b - 1e-9) * fps))
        best, bov, sealed = None, 0.0, []
        for k in range(max(0, k0), min(nv, k1 + 1)):
            ov = min(b, (k + 1) / fps) - max(a, k / fps)
            if ov > bov:
                best, bov = k, ov
            if ov >= SEAL / fps:
                sealed.append(k)
        for k in sealed + ([best] if best is not None else []):
            jaw[k] = 0.0
            tuck[k] = 0.0
    speech_v = v(an["speech"].astype(np.float64)) > 0.5
    feats_v = {k: v(an["feats"][k]) for k in ("loud", "f0")}
    # F0 averaged over frames mixes voiced/unvoiced; use the median of voiced frames per video frame.
    f0 = an["feats"]["f0"]
    for k in range(nv):
        seg = f0[int(k / fps * AR): int((k + 1) / fps * AR) + 1]
        seg = seg[seg > 0]
        feats_v["f0"][k] = float(np.median(seg)) if seg.size else 0.0
    rng = np.random.default_rng(seed)
    rot, trans, brow, blink = head_and_face(feats_v, speech_v, fps, rng, blinks)
    ds, ms = float(dynamic_scale), float(motion_scale)
    return MotionTrack(
        fps=fps,
        jaw_open=np.clip(jaw * ds, 0.0, MAX_JAW * 1.6).astype(np.float32),
        lip_width=(width * ds).astype(np.float32),
        head_rotation=(rot * ms).astype(np.float32),
        head_translation=(trans * ms).astype(np.float32),
        blink=blink,
        brow_raise=np.clip(brow * 0.6 * ms, 0, 1).astype(np.float32),
        pucker=np.clip(pucker * ds, 0, 1).astype(np.float32),
        lip_tuck=np.clip(tuck * ds, 0, 1).astype(np.float32),
        notes=list(an.get("notes", [])),
    )
