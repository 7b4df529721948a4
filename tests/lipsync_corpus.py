"""Speech with exact phone timings for lip-sync tuning and held-out measurement, and the
degradations a user's audio brings (telephone band, lossy codecs, noise, music beds).

Two synthesizers, two roles:
  tuned     espeak-ng voices (tests/espeak_timing.py): every constant of the motion model and
            the training data of any learned part come from these alone
  held out  flite voices (tests/flite_timing.py; Debian `flite`): another synthesizer with its
            own durations and voice sources, never used for tuning or training

Truth is the phone sequence as each synthesizer timed it, with stops starting at their closure
(`stop_closures`). Degradations change the audio only, never the truth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .espeak_timing import Phone, speak_with_phonemes, stop_closures

# Harvard sentences (IEEE 1969 recommended practice, public domain): phonetically balanced.
HARVARD = [
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.", "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.", "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.", "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.", "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.", "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.", "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.", "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.", "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.", "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.", "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.", "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.", "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.", "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.", "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.", "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.", "What joy there is in living.",
]
# Held-out texts are other sentences too, so neither voice nor wording was seen in tuning.
HELD_OUT_TEXT = HARVARD[::2]
TUNING_TEXT = HARVARD[1::2]

# espeak-ng voices (with variants: other formant sets and voice sources) for tuning/training.
ESPEAK_VOICES = ("en-us", "en-gb", "en-us+f2", "en-gb+f4", "en-us+m3", "en-gb-scotland+m7", "en-029+f5",
                 "en-gb-x-rp+klatt2", "en-us+croak", "en-gb+m1")
FLITE_VOICES = ("slt", "rms", "awb", "kal")  # kal: 8 kHz diphones


@dataclass
class Clip:
    name: str
    samples: np.ndarray  # float32 mono
    rate: int
    phones: list  # as the synthesizer timed them (stops at their release)
    closure_phones: list  # stops starting at their closure: the openness truth

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def speak(text: str, voice: str, speed: int = 150, pitch: int | None = None):
    """(samples, rate, phones) from espeak-ng (`voice`) or flite (`flite:NAME`; `speed` 150 is
    flite's own rate, others stretch its durations by 150 / speed; `pitch` is then a held F0 in Hz)."""
    if voice.startswith("flite:"):
        from .flite_timing import speak_flite

        return speak_flite(text, voice.split(":", 1)[1], stretch=150.0 / speed, f0=pitch)
    return speak_with_phonemes(text, voice=voice, speed=speed, pitch=pitch)


def make_clip(name: str, parts, voice: str, speed: int = 150, lead: float = 0.5, tail: float = 0.6,
              pitch: int | None = None) -> Clip:
    """Sentences `parts` = [(text, pause_after_s)] spoken by `voice`, with silence around them."""
    pieces, phones, t, rate = [], [], lead, None
    for text, gap in parts:
        s, rate, ph = speak(text, voice, speed, pitch)
        phones += [Phone(p.start + t, p.end + t, p.ipa) for p in ph]
        pieces.append(s)
        t += len(s) / rate
        if gap:
            pieces.append(np.zeros(int(gap * rate), np.float32))
            t += gap
    x = np.concatenate([np.zeros(int(lead * rate), np.float32)] + pieces + [np.zeros(int(tail * rate), np.float32)])
    return Clip(name, x, rate, phones, stop_closures(phones, x, rate))


# ------------------------------------------------------------------ degradations
def _to(x, rate, new_rate):
    from sonic_core.audio.features import resample_mono

    return resample_mono(np.asarray(x, np.float32), rate, new_rate) if rate != new_rate else np.asarray(x, np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    f = np.fft.rfftfreq(n)
    spec = (rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)) / np.sqrt(np.maximum(f, 1.0 / n))
    y = np.fft.irfft(spec, n)
    return (y / (y.std() + 1e-12)).astype(np.float32)


def music_bed(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic music bed: a chord progression of harmonic tones with a bass line and a
    soft beat of filtered noise bursts, 100-120 bpm (what a presenter's background track has:
    sustained pitched energy in the speech band plus rhythmic transients)."""
    t = np.arange(n) / rate
    bpm = rng.uniform(96, 124)
    beat = 60.0 / bpm
    roots = rng.choice([0, 5, 7, 9, 3, 10], size=max(1, int(t[-1] / (4 * beat)) + 2))
    y = np.zeros(n, np.float64)
    base = 220.0 * 2 ** (rng.integers(-3, 3) / 12)
    for k, r in enumerate(roots):
        a, b = int(k * 4 * beat * rate), min(n, int((k + 1) * 4 * beat * rate))
        if a >= n:
            break
        tt = t[a:b] - t[a]
        env = np.minimum(1, tt / 0.05) * np.exp(-tt / 3.0)
        for semi in (0, 4, 7):
            f = base * 2 ** ((r + semi) / 12)
            for h in range(1, 6):
                y[a:b] += env * np.sin(2 * np.pi * f * h * tt + rng.uniform(0, 6.3)) / h ** 1.5
        y[a:b] += 1.5 * env * np.sin(2 * np.pi * base / 2 * 2 ** (r / 12) * tt)
    noise = rng.standard_normal(n)
    hits = np.zeros(n)
    for k in range(int(t[-1] / beat) + 1):
        i = int(k * beat * rate)
        m = min(n - i, int(0.12 * rate))
        if m > 0:
            hits[i:i + m] += np.exp(-np.arange(m) / (0.03 * rate))
    kernel = np.ones(8) / 8
    y += 1.2 * np.convolve(noise, kernel, mode="same") * hits
    return (y / (y.std() + 1e-12)).astype(np.float32)


def mix_at_snr(x: np.ndarray, bed: np.ndarray, snr_db: float) -> np.ndarray:
    """`x` plus `bed` scaled so speech (its frames above -40 dB of its peak) is `snr_db` louder."""
    hop = 160
    fr = x[: len(x) // hop * hop].reshape(-1, hop)
    p = (fr.astype(np.float64) ** 2).mean(1)
    speech_p = p[p > p.max() * 1e-4].mean() if p.size else 1e-6
    g = np.sqrt(speech_p / 10 ** (snr_db / 10) / max(float((bed.astype(np.float64) ** 2).mean()), 1e-12))
    y = x + g * bed[: len(x)]
    return (y / max(1.0, float(np.abs(y).max()) / 0.95)).astype(np.float32)


def codec_roundtrip(x: np.ndarray, rate: int, codec: str, bit_rate: int) -> tuple[np.ndarray, int]:
    """Encode with PyAV (`libmp3lame`, `aac`, ...) and decode back (the codec's delay is removed by the demuxer)."""
    import tempfile
    from pathlib import Path

    from sonic_core.audio.decode import load_audio

    from .speech import write_audio

    ext = {"libmp3lame": "mp3", "aac": "m4a", "libopus": "ogg"}[codec]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"c.{ext}"
        fmt = "mp4" if ext == "m4a" else None
        y = _to(x, rate, 48000 if codec == "libopus" else rate)
        r = 48000 if codec == "libopus" else rate
        write_audio(path, y[None], r, codec=codec, container_format=fmt, bit_rate=bit_rate)
        clip = load_audio(path)
        return clip.mono()[: int(len(x) * clip.sample_rate / rate) + 1], clip.sample_rate


def telephone(x: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """8 kHz, 300-3400 Hz band (a phone line)."""
    y = _to(x, rate, 8000)
    spec = np.fft.rfft(y)
    f = np.fft.rfftfreq(len(y), 1 / 8000)
    spec[(f < 300) | (f > 3400)] = 0
    return np.fft.irfft(spec, len(y)).astype(np.float32), 8000


CONDITIONS = ("clean", "tel8k", "mp3", "aac", "noise15", "music15")


def degrade(clip: Clip, condition: str, seed: int = 0) -> tuple[np.ndarray, int]:
    """The clip's audio under `condition` (one of CONDITIONS): (samples, rate)."""
    rng = np.random.default_rng(seed)
    x, r = clip.samples, clip.rate
    if condition == "clean":
        return x, r
    if condition == "tel8k":
        return telephone(x, r)
    if condition == "mp3":
        return codec_roundtrip(x, r, "libmp3lame", 48000)
    if condition == "aac":
        return codec_roundtrip(x, r, "aac", 48000)
    if condition == "noise15":
        return mix_at_snr(x, pink_noise(len(x), rng), 15.0), r
    if condition == "music15":
        return mix_at_snr(x, music_bed(len(x), r, rng), 15.0), r
    raise ValueError(f"unknown condition {condition!r}; one of {CONDITIONS}")


__all__ = ["Clip", "CONDITIONS", "ESPEAK_VOICES", "FLITE_VOICES", "HARVARD", "HELD_OUT_TEXT", "TUNING_TEXT",
           "degrade", "make_clip", "music_bed", "mix_at_snr", "speak"]
