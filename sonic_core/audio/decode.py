"""Audio decoding with PyAV: any container/codec FFmpeg reads -> :class:`AudioClip`.

Everything goes through libswresample (``av.AudioResampler``) so every input format
(s16, s32, flt, dbl, planar or packed) comes out as planar float32, optionally at a new
sample rate. Samples are gathered as a few large numpy blocks, never one Python object
per sample; ten minutes of 48 kHz stereo is ~230 MB of float32.
"""
from __future__ import annotations

import io
import os
import warnings
from typing import Union

import av
import numpy as np

from ..errors import SonicInputError, check_input_file
from ..types import AudioClip

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview, "AudioClip", tuple]

_FIX_FORMATS = "Use a WAV, MP3, FLAC, OGG (Vorbis/Opus) or M4A/AAC file, or a video with a sound track"


def _name(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return "<in-memory audio>"


def audio_from_array(samples, sample_rate: int, source_path: str | None = None) -> AudioClip:
    """Wrap an array as an :class:`AudioClip`.

    Accepts [T] (mono), [C, T] (channels first) or [T, C] with C <= 16 < T (channels last,
    transposed here). Integer PCM (int8/16/32, uint8) is scaled to [-1, 1]; floats are clipped
    to [-1, 1]; NaN/inf become 0. Torch tensors are accepted (moved to the CPU).
    """
    if hasattr(samples, "detach"):  # torch tensor
        samples = samples.detach().cpu().numpy()
    a = np.asarray(samples)
    if a.ndim == 3 and a.shape[0] == 1:  # ComfyUI AUDIO waveform [1, C, T]
        a = a[0]
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise SonicInputError(
            f"Audio array has shape {a.shape}; expected [samples], [channels, samples] or "
            "[samples, channels]. Reshape it before passing it in."
        )
    if a.shape[0] > 16 and a.shape[1] <= 16:
        a = a.T
    if a.dtype == np.uint8:
        a = (a.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max + 1)
    elif a.dtype == np.bool_:
        raise SonicInputError("Audio array is boolean; pass PCM samples (float in [-1, 1] or integers).")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0)
    np.clip(a, -1.0, 1.0, out=a)
    sample_rate = int(sample_rate)
    if sample_rate <= 0:
        raise SonicInputError(f"Audio sample rate must be a positive integer, got {sample_rate}.")
    if a.shape[1] == 0:
        raise SonicInputError(f"Audio {source_path or 'array'} is empty (0 samples). Pass a recording with speech in it.")
    return AudioClip(samples=a, sample_rate=sample_rate, source_path=source_path)


_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0, "flt": 1.0, "dbl": 1.0}


def _frame_samples(frame) -> np.ndarray:
    """A decoded audio frame of any sample format as float32 [channels, samples], without libswresample."""
    fmt = frame.format.name
    base = fmt[:-1] if fmt.endswith("p") else fmt
    a = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not fmt.endswith("p"):  # packed: one row, samples interleaved
        a = a.reshape(-1, channels).T
    a = a.astype(np.float32)
    if base == "u8":
        a -= 128.0
    return a / _SCALE.get(base, 1.0)


MAX_SWR_CHANNELS = 6  # more channels than 5.1 never reach libswresample (it crashed on 8 and 32)


def _layout_for(channels: int):
    """Default FFmpeg layout for a channel count (1 mono, 2 stereo, 6 -> 5.1, ...)."""
    return av.AudioLayout(f"{int(channels)}c")


class _Collector:
    """Accumulates planar float32 frames into a few large blocks (bounded Python overhead)."""

    def __init__(self, block: int = 1 << 20):
        self.blocks: list[np.ndarray] = []
        self.pending: list[np.ndarray] = []
        self.pending_n = 0
        self.block = block
        self.channels = None

    def add(self, frame) -> None:
        self.add_array(frame.to_ndarray())  # fltp -> [C, n] float32

    def add_array(self, a: np.ndarray) -> None:
        if a.ndim == 1:
            a = a[None, :]
        if a.shape[1] == 0:
            return
        if self.channels is None:
            self.channels = a.shape[0]
        self.pending.append(a)
        self.pending_n += a.shape[1]
        if self.pending_n >= self.block:
            self._flush()

    def _flush(self):
        if self.pending:
            self.blocks.append(np.concatenate(self.pending, axis=1) if len(self.pending) > 1 else self.pending[0].copy())
            self.pending, self.pending_n = [], 0

    def result(self) -> np.ndarray | None:
        self._flush()
        if not self.blocks:
            return None
        if len(self.blocks) == 1:
            return np.ascontiguousarray(self.blocks[0], dtype=np.float32)
        total = sum(b.shape[1] for b in self.blocks)
        out = np.empty((self.blocks[0].shape[0], total), dtype=np.float32)
        pos = 0
        while self.blocks:  # release blocks as we copy: peak ~= result + one block
            b = self.blocks.pop(0)
            out[:, pos:pos + b.shape[1]] = b
            pos += b.shape[1]
        return out


def _resample_array(samples: np.ndarray, in_rate: int, out_rate: int | None, out_channels: int | None) -> np.ndarray:
    """Resample / remix a [C, T] float32 array with libswresample, in chunks."""
    c_in = samples.shape[0]
    out_rate = int(out_rate or in_rate)
    out_channels = int(out_channels or c_in)
    if out_rate == in_rate and out_channels == c_in:
        return samples
    if c_in > MAX_SWR_CHANNELS or out_channels > MAX_SWR_CHANNELS:
        # libswresample crashes the process on some layouts of 8 or more channels: mix such
        # audio down here (all channels averaged), and resample channel by channel.
        if out_channels < c_in:
            mixed = samples.mean(axis=0, keepdims=True, dtype=np.float32)
            samples = mixed if out_channels == 1 else np.repeat(mixed, out_channels, axis=0)
        if out_rate == in_rate:
            return np.ascontiguousarray(samples, dtype=np.float32)
        return np.concatenate([_resample_array(row[None], in_rate, out_rate, 1) for row in samples])
    resampler = av.AudioResampler(format="fltp", layout=_layout_for(out_channels), rate=out_rate)
    col = _Collector()
    chunk = 1 << 16
    in_layout = _layout_for(c_in)
    for start in range(0, samples.shape[1], chunk):
        part = np.ascontiguousarray(samples[:, start:start + chunk])
        frame = av.AudioFrame.from_ndarray(part, format="fltp", layout=in_layout)
        frame.sample_rate = in_rate
        frame.pts = start
        frame.time_base = _frac(1, in_rate)
        for f in resampler.resample(frame):
            col.add(f)
    for f in resampler.resample(None):
        col.add(f)
    out = col.result()
    if out is None:
        out = np.zeros((out_channels, 0), dtype=np.float32)
    return out


def _frac(n, d):
    from fractions import Fraction

    return Fraction(n, d)


def resample_clip(clip: AudioClip, sample_rate: int | None = None, channels: int | None = None) -> AudioClip:
    """Return `clip` at `sample_rate` Hz with `channels` channels (FFmpeg's downmix matrix).

    Either may be None (= keep). Same clip object returned when nothing changes.
    """
    if (sample_rate is None or int(sample_rate) == clip.sample_rate) and (
        channels is None or int(channels) == clip.samples.shape[0]
    ):
        return clip
    out = _resample_array(clip.samples, clip.sample_rate, sample_rate, channels)
    return AudioClip(samples=out, sample_rate=int(sample_rate or clip.sample_rate), source_path=clip.source_path)


def load_audio(source: AudioSource, sample_rate: int | None = None, mono: bool = False) -> AudioClip:
    """Decode an audio file (or a video's sound track) into a float32 :class:`AudioClip`.

    source: a path, the file's bytes, an existing AudioClip, or a ``(samples, sample_rate)``
        tuple (see :func:`audio_from_array`).
    sample_rate: resample to this rate (libswresample) or None to keep the file's rate.
    mono: average all channels into one.

    Raises SonicInputError (naming the file and the fix) when the file is missing, empty,
    not decodable, has no audio stream, or decodes to zero samples.
    """
    if sample_rate is not None and int(sample_rate) <= 0:
        raise SonicInputError(f"sample_rate must be a positive integer or None, got {sample_rate!r}.")
    if isinstance(source, AudioClip):
        clip = source
    elif isinstance(source, tuple) and len(source) == 2 and not isinstance(source[0], (str, os.PathLike)):
        clip = audio_from_array(source[0], source[1])
    else:
        clip = _decode(source, sample_rate)
    if sample_rate is not None and clip.sample_rate != int(sample_rate):
        clip = resample_clip(clip, sample_rate=int(sample_rate))
    if mono and clip.samples.shape[0] != 1:
        clip = AudioClip(samples=clip.samples.mean(axis=0, keepdims=True, dtype=np.float32),
                         sample_rate=clip.sample_rate, source_path=clip.source_path)
    return clip


def _decode(source, sample_rate: int | None) -> AudioClip:
    name = _name(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise SonicInputError(f"Audio {name} is empty (0 bytes). Pass the contents of a real audio file.")
        target = io.BytesIO(bytes(source))
        path = None
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        check_input_file(path, "Audio", "an audio file", "recording")
        target = path
    else:
        raise SonicInputError(
            f"Unsupported audio input of type {type(source).__name__}; pass a file path, file bytes, "
            "an AudioClip or a (samples, sample_rate) tuple."
        )

    try:
        container = av.open(target, mode="r")
    except av.error.FFmpegError as e:
        raise SonicInputError(
            f"Audio file '{name}' could not be opened as audio/video ({e.__class__.__name__}: {e.strerror or e}). "
            f"It is corrupt or not a media file. {_FIX_FORMATS}."
        ) from None
    except OSError as e:  # permission denied etc.
        raise SonicInputError(f"Audio file '{name}' could not be read: {e}. Check the file's permissions.") from None

    with container:
        if not container.streams.audio:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
            raise SonicInputError(
                f"File '{name}' has no audio track (it contains: {kinds}). {_FIX_FORMATS}."
            )
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        resampler = None
        col = _Collector()
        in_rate = None
        error = None
        many = None  # frames of more than six channels, mixed to mono (see _frame_samples)
        try:
            for frame in container.decode(stream):
                if frame.samples == 0:
                    continue
                if in_rate is None:
                    in_rate = frame.sample_rate
                if len(frame.layout.channels) > MAX_SWR_CHANNELS or many is not None:
                    # libswresample crashes the process on some layouts of 8 or more channels
                    # (7.1, 32-channel WAVs): such audio is mixed down here, then resampled.
                    many = [] if many is None else many
                    many.append(_frame_samples(frame).mean(axis=0, keepdims=True, dtype=np.float32))
                    continue
                if resampler is None:
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=int(sample_rate or in_rate))
                for f in resampler.resample(frame):
                    col.add(f)
        except av.error.FFmpegError as e:
            error = e
        if many:
            mixed = np.concatenate(many, axis=1)
            del many
            rate = int(sample_rate or in_rate)
            col.add_array(_resample_array(mixed, in_rate, rate, 1) if rate != in_rate else mixed)
        if resampler is not None:
            try:
                for f in resampler.resample(None):
                    col.add(f)
            except av.error.FFmpegError:
                pass
        samples = col.result()
        if samples is None or samples.shape[1] == 0:
            if error is not None:
                raise SonicInputError(
                    f"Audio file '{name}' could not be decoded ({error.__class__.__name__}: {error}). "
                    f"The file is corrupt or truncated. {_FIX_FORMATS}."
                ) from None
            raise SonicInputError(
                f"Audio file '{name}' contains no audio samples (empty track). "
                "Pass a recording that actually contains speech."
            )
        if error is not None:
            warnings.warn(
                f"Audio file '{name}' is damaged: decoding stopped after "
                f"{samples.shape[1] / float(sample_rate or in_rate):.2f} s ({error}). Using what was decoded.",
                RuntimeWarning,
                stacklevel=3,
            )
    if not np.isfinite(samples).all():
        samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
    np.clip(samples, -1.0, 1.0, out=samples)
    return AudioClip(samples=samples, sample_rate=int(sample_rate or in_rate), source_path=path)


def fit_duration(clip: AudioClip, duration: float | None) -> AudioClip:
    """Trim or pad (with silence) `clip` to exactly `duration` seconds; None or 0 -> unchanged."""
    if duration is None:
        return clip
    try:
        duration = float(duration)
    except (TypeError, ValueError):
        raise SonicInputError(f"duration must be a number of seconds or None, got {duration!r}.") from None
    if duration == 0:
        return clip
    if not np.isfinite(duration) or duration < 0:
        raise SonicInputError(f"duration must be a positive number of seconds (or None/0 for the whole audio), got {duration}.")
    n = int(round(duration * clip.sample_rate))
    cur = clip.samples.shape[1]
    if n == cur:
        return clip
    if n < cur:
        samples = np.ascontiguousarray(clip.samples[:, :n])
    else:
        samples = np.zeros((clip.samples.shape[0], n), dtype=np.float32)
        samples[:, :cur] = clip.samples
    return AudioClip(samples=samples, sample_rate=clip.sample_rate, source_path=clip.source_path)
