"""Test helpers: real speech from espeak-ng, silence/tones, and encoding audio with PyAV.

Tests that need speech call :func:`require_espeak` (or use :func:`synthesize`, which calls
it) so they skip with a clear reason where espeak-ng is not installed. CI installs it via
apt (`apt-get install espeak-ng`).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from fractions import Fraction

import numpy as np

ESPEAK = shutil.which("espeak-ng")


def require_espeak():
    """pytest.skip when the espeak-ng CLI is missing."""
    if ESPEAK is None:
        import pytest

        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng); needed to synthesize test speech")
    return ESPEAK


def synthesize(text: str, path, voice: str = "en-us", speed: int = 150, sample_rate: int | None = None,
               pitch: int | None = None, gap: int | None = None) -> str:
    """Speak `text` with espeak-ng into a WAV file at `path` (mono, 16-bit).

    espeak-ng writes 22050 Hz; `sample_rate` resamples (PyAV/libswresample) when given.
    `gap` is espeak's extra pause between words, in units of 10 ms. Returns the path.
    """
    exe = require_espeak()
    path = os.fspath(path)
    cmd = [exe, "-v", voice, "-s", str(int(speed)), "-w", path]
    if pitch is not None:
        cmd += ["-p", str(int(pitch))]
    if gap is not None:
        cmd += ["-g", str(int(gap))]
    subprocess.run(cmd + [text], check=True, capture_output=True)
    if sample_rate is not None and sample_rate != 22050:
        from sonic_core.audio.decode import load_audio

        clip = load_audio(path, sample_rate=sample_rate)
        write_audio(path, clip.samples, sample_rate, codec="pcm_s16le")
    return path


def speech_array(text: str, tmp_dir, **kw) -> tuple[np.ndarray, int]:
    """Synthesize `text` and return ([1, T] float32 samples, sample_rate)."""
    from sonic_core.audio.decode import load_audio

    path = synthesize(text, os.path.join(os.fspath(tmp_dir), "_speech.wav"), **kw)
    clip = load_audio(path)
    return clip.samples, clip.sample_rate


def silence(seconds: float, sample_rate: int = 16000, channels: int = 1) -> np.ndarray:
    return np.zeros((channels, int(round(seconds * sample_rate))), dtype=np.float32)


def tone(seconds: float, freq: float = 440.0, sample_rate: int = 16000, channels: int = 1,
         amplitude: float = 0.5) -> np.ndarray:
    """A sine tone, [channels, T] float32; channel k is phase-shifted so channels differ."""
    t = np.arange(int(round(seconds * sample_rate)), dtype=np.float64) / sample_rate
    rows = [amplitude * np.sin(2 * np.pi * freq * t + k * 0.7) for k in range(channels)]
    return np.asarray(rows, dtype=np.float32)


_CONTAINER_FOR_EXT = {"wav": "wav", "mp3": "mp3", "flac": "flac", "ogg": "ogg", "opus": "ogg",
                      "m4a": "mp4", "mp4": "mp4", "mkv": "matroska", "aac": "adts"}


def write_audio(path, samples: np.ndarray, sample_rate: int, codec: str = "pcm_s16le",
                container_format: str | None = None, bit_rate: int | None = None) -> str:
    """Encode [C, T] float32 samples with PyAV into `path` (codec e.g. pcm_s16le, pcm_s24le,
    pcm_f32le, libmp3lame, flac, libopus, vorbis, aac). Returns the path."""
    import av

    path = os.fspath(path)
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[None]
    channels = samples.shape[0]
    fmt = container_format or _CONTAINER_FOR_EXT.get(path.rsplit(".", 1)[-1].lower())
    layout = av.AudioLayout(f"{channels}c")
    with av.open(path, "w", format=fmt) as out:
        opts = {"strict": "-2"} if codec == "vorbis" else {}
        st = out.add_stream(codec, rate=sample_rate, layout=layout, options=opts)
        if bit_rate:
            st.bit_rate = bit_rate
        # Convert to the encoder's preferred sample format via the stream's own resampling.
        fmt_name = st.codec_context.format.name if st.codec_context.format else "fltp"
        resampler = av.AudioResampler(format=fmt_name, layout=layout, rate=sample_rate,
                                      frame_size=st.codec_context.frame_size or None)
        chunk = 4096
        for start in range(0, samples.shape[1], chunk):
            part = np.ascontiguousarray(samples[:, start:start + chunk])
            fr = av.AudioFrame.from_ndarray(part, format="fltp", layout=layout)
            fr.sample_rate = sample_rate
            fr.pts = start
            fr.time_base = Fraction(1, sample_rate)
            for f in resampler.resample(fr):
                out.mux(st.encode(f))
        for f in resampler.resample(None):
            out.mux(st.encode(f))
        out.mux(st.encode(None))
    return path


def shipped_speech(path, seconds: float) -> str:
    """The shipped speech sample (assets/speech.wav, a real voice) cut or repeated to `seconds`, as a WAV."""
    import wave
    from pathlib import Path

    from sonic_core.audio import load_audio

    clip = load_audio(Path(__file__).resolve().parent.parent / "assets" / "speech.wav")
    x = np.resize(clip.mono(), int(seconds * clip.sample_rate))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(clip.sample_rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return path
