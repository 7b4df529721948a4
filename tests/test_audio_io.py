"""Audio decoding: real espeak-ng speech through every codec/rate/layout we promise."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [p for p in (HERE, os.path.dirname(HERE)) if p not in sys.path]

from speech import require_espeak, synthesize, tone, write_audio  # noqa: E402

from sonic_core.audio import audio_from_array, fit_duration, load_audio, resample_clip  # noqa: E402
from sonic_core.errors import SonicInputError  # noqa: E402
from sonic_core.types import AudioClip  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog. Then it rests."


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Reference speech: [1, T] float32 at 22050 Hz from espeak-ng."""
    require_espeak()
    d = tmp_path_factory.mktemp("speech")
    path = synthesize(TEXT, d / "ref.wav")
    clip = load_audio(path)
    assert clip.sample_rate == 22050 and clip.samples.shape[0] == 1
    assert 2.5 < clip.duration < 6.0
    return clip


def _best_corr(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[float, int]:
    """Max normalised correlation of a vs b over lags in [-max_lag, max_lag] (FFT)."""
    n = min(len(a), len(b))
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    size = 1 << int(np.ceil(np.log2(2 * n)))
    xc = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    lags = np.r_[np.arange(0, max_lag + 1), np.arange(-max_lag, 0)]
    vals = xc[lags]
    i = int(np.argmax(vals))
    return float(vals[i] / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)), int(lags[i])


# (extension, codec, rate, channels, duration tolerance in seconds, min correlation)
# Lossy codecs: duration within one codec frame (+ priming the demuxer does not strip), and the
# decoded waveform must still line up with the original (lag within 1 ms).
CASES = [
    ("wav", "pcm_s16le", 8000, 1, 1e-9, 0.999),
    ("wav", "pcm_s24le", 44100, 2, 1e-9, 0.999),
    ("wav", "pcm_f32le", 48000, 6, 1e-9, 0.999),
    ("wav", "pcm_s16le", 96000, 2, 1e-9, 0.999),
    ("flac", "flac", 44100, 1, 1e-9, 0.999),
    ("flac", "flac", 48000, 6, 1e-9, 0.999),
    ("mp3", "libmp3lame", 44100, 2, 0.03, 0.97),
    ("mp3", "libmp3lame", 8000, 1, 0.15, 0.85),
    ("ogg", "libopus", 48000, 2, 0.03, 0.97),
    ("ogg", "libopus", 48000, 6, 0.03, 0.97),
    ("ogg", "vorbis", 44100, 2, 0.03, 0.97),
    ("m4a", "aac", 44100, 2, 2048 / 44100 + 1e-6, 0.97),
    ("m4a", "aac", 48000, 6, 2048 / 48000 + 1e-6, 0.97),
    ("m4a", "aac", 8000, 1, 2048 / 8000 + 1e-6, 0.97),
]


@pytest.mark.parametrize("ext,codec,rate,channels,tol,min_corr", CASES,
                         ids=[f"{c[1]}-{c[2]}-{c[3]}ch" for c in CASES])
def test_decode_formats(speech, tmp_path, ext, codec, rate, channels, tol, min_corr):
    src = resample_clip(speech, sample_rate=rate).samples[0]
    # Each channel a scaled copy, so a channel mix-up or drop would show in the levels.
    gains = np.linspace(1.0, 0.5, channels, dtype=np.float32)[:, None]
    data = src[None, :] * gains
    path = write_audio(tmp_path / f"speech.{ext}", data, rate, codec=codec)

    clip = load_audio(path)
    assert clip.sample_rate == rate
    assert clip.samples.shape[0] == channels
    assert clip.samples.dtype == np.float32 and clip.samples.flags.c_contiguous
    assert np.abs(clip.samples).max() <= 1.0
    expected = data.shape[1] / rate
    assert abs(clip.duration - expected) <= tol, (clip.duration, expected)
    corr, lag = _best_corr(clip.samples[0], src, max_lag=rate // 20)
    assert corr >= min_corr, corr
    assert abs(lag) <= max(1, rate // 1000), lag  # aligned: priming removed
    if channels > 1:  # channel order kept
        levels = np.sqrt((clip.samples.astype(np.float64) ** 2).mean(axis=1))
        if codec == "aac" and channels == 6:
            levels = np.delete(levels, 3)  # AAC low-passes the LFE channel (index 3 in 5.1) to 120 Hz
        assert np.all(np.diff(levels) < 0), levels
    if str(path).endswith(".m4a") or codec in ("pcm_s16le", "flac"):
        assert clip.source_path == str(path)


def test_resample_and_mono(speech, tmp_path):
    data = np.stack([speech.samples[0], -speech.samples[0] * 0.5])
    path = write_audio(tmp_path / "s.flac", data, 22050, codec="flac")
    clip = load_audio(path, sample_rate=16000, mono=True)
    assert clip.sample_rate == 16000 and clip.samples.shape[0] == 1
    assert abs(clip.duration - speech.duration) < 2e-3
    ref = resample_clip(speech, 16000).samples[0] * 0.25  # mean of x and -x/2
    corr, lag = _best_corr(clip.samples[0], ref, 100)
    assert corr > 0.99 and abs(lag) <= 1
    assert np.std(clip.samples[0]) == pytest.approx(np.std(ref), rel=0.05)

    up = load_audio(path, sample_rate=96000)
    assert up.sample_rate == 96000 and up.samples.shape[0] == 2
    assert abs(up.duration - speech.duration) < 2e-3


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_analysis_resampler_matches_scipy_resample_poly(speech, rate):
    """The engine's own polyphase resampler (scipy.signal is not imported: it cost 0.85 s of a
    cold start) gives scipy.signal.resample_poly's output, length and alignment included."""
    from math import gcd

    from scipy.signal import resample_poly

    from sonic_core.audio.features import resample_mono

    x = resample_poly(speech.samples[0].astype(np.float64), rate, 22050).astype(np.float32)
    x = x[: len(x) - 7]  # not a whole number of output samples
    g = gcd(rate, 16000)
    ref = resample_poly(x.astype(np.float64), 16000 // g, rate // g)
    ours = resample_mono(x, rate, 16000)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-5 * np.abs(ref).max()
    assert float(np.corrcoef(ours, ref)[0, 1]) > 0.99999


def test_video_file_with_audio(speech, tmp_path):
    import torch

    from sonic_core.video import Mp4Writer

    with Mp4Writer(tmp_path / "v.mp4", 64, 64, 25, audio=speech) as w:
        n = int(np.ceil(speech.duration * 25))
        w.write(torch.full((n, 64, 64, 3), 90, dtype=torch.uint8))
    clip = load_audio(tmp_path / "v.mp4", sample_rate=16000)
    assert clip.sample_rate == 16000
    assert abs(clip.duration - n / 25) < 0.05
    corr, _ = _best_corr(clip.samples[0], resample_clip(speech, 16000).samples[0], 200)
    assert corr > 0.95


def test_long_audio_memory_sane(tmp_path):
    """10 minutes of 48 kHz stereo decode into one float32 array without blowing up."""
    x = tone(600.0, 220.0, 48000, channels=2, amplitude=0.3)
    path = write_audio(tmp_path / "long.flac", x, 48000, codec="flac")
    del x
    clip = load_audio(path)
    assert clip.samples.shape == (2, 600 * 48000)
    assert clip.samples.nbytes == 2 * 600 * 48000 * 4
    assert abs(float(np.abs(clip.samples).max()) - 0.3) < 1e-3


# --------------------------------------------------------------------- errors

def test_missing_file(tmp_path):
    p = tmp_path / "nope.wav"
    with pytest.raises(SonicInputError, match="not found.*nope.wav"):
        load_audio(p)


def test_zero_length_file(tmp_path):
    p = tmp_path / "empty.mp3"
    p.write_bytes(b"")
    with pytest.raises(SonicInputError, match=r"empty\.mp3.*0 bytes"):
        load_audio(p)


def test_corrupt_bytes(tmp_path):
    p = tmp_path / "garbage.m4a"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(SonicInputError, match="garbage.m4a") as e:
        load_audio(p)
    assert "WAV" in str(e.value)  # says what to use instead


def test_non_audio_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("this is not audio\n" * 100)
    with pytest.raises(SonicInputError, match="notes.txt"):
        load_audio(p)


def test_image_file_has_no_audio(tmp_path):
    from PIL import Image

    p = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (10, 20, 30)).save(p)
    with pytest.raises(SonicInputError, match="photo.png"):
        load_audio(p)


def test_video_without_audio(tmp_path):
    import torch

    from sonic_core.video import Mp4Writer

    with Mp4Writer(tmp_path / "silent.mp4", 32, 32, 25) as w:
        w.write(torch.zeros((5, 32, 32, 3), dtype=torch.uint8))
    with pytest.raises(SonicInputError, match="silent.mp4.*no audio track"):
        load_audio(tmp_path / "silent.mp4")


def test_empty_audio_stream(tmp_path):
    import wave

    p = tmp_path / "nothing.wav"  # a valid WAV header with 0 sample frames
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"")
    with pytest.raises(SonicInputError, match="nothing.wav.*(no audio samples|could not)"):
        load_audio(p)


def test_truncated_file_still_decodes_or_errors_clearly(speech, tmp_path):
    p = write_audio(tmp_path / "cut.mp3", speech.samples, 22050, codec="libmp3lame")
    data = Path(p).read_bytes()
    cut = tmp_path / "cut_half.mp3"
    cut.write_bytes(data[: len(data) // 2])
    clip = load_audio(cut)  # a cut-off download plays up to where it stops
    assert 0.3 * speech.duration < clip.duration < 0.7 * speech.duration


def test_bytes_input(speech, tmp_path):
    p = write_audio(tmp_path / "b.flac", speech.samples, 22050, codec="flac")
    clip = load_audio(Path(p).read_bytes())
    assert clip.samples.shape == speech.samples.shape
    with pytest.raises(SonicInputError, match="empty"):
        load_audio(b"")


# ----------------------------------------------------------------- arrays, fit

def test_audio_from_array_layouts():
    x = np.sin(np.linspace(0, 100, 16000)).astype(np.float32)
    assert audio_from_array(x, 16000).samples.shape == (1, 16000)
    assert audio_from_array(np.stack([x, x], 1), 16000).samples.shape == (2, 16000)  # [T, C]
    i16 = (x * 32767).astype(np.int16)
    c = audio_from_array(i16, 16000)
    assert np.allclose(c.samples[0], x, atol=1e-4)
    loud = audio_from_array(x * 3, 16000)
    assert np.abs(loud.samples).max() <= 1.0
    assert load_audio((x, 16000), sample_rate=8000).samples.shape == (1, 8000)
    with pytest.raises(SonicInputError):
        audio_from_array(np.zeros((1, 0), np.float32), 16000)


def test_fit_duration():
    clip = AudioClip(np.ones((2, 16000), np.float32), 16000)
    assert fit_duration(clip, None) is clip
    short = fit_duration(clip, 0.25)
    assert short.samples.shape == (2, 4000) and short.duration == 0.25
    long = fit_duration(clip, 1.5)
    assert long.samples.shape == (2, 24000)
    assert np.all(long.samples[:, :16000] == 1) and np.all(long.samples[:, 16000:] == 0)
    assert fit_duration(clip, 1.0).samples.shape == (2, 16000)
    with pytest.raises(SonicInputError, match="duration"):
        fit_duration(clip, -1)
