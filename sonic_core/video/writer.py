"""Streaming MP4 writer: H.264 (libx264 by default) + AAC, written atomically.

    with Mp4Writer("out.mp4", 512, 512, fps=25, audio=clip, encode_ahead=True) as w:
        for chunk in renderer:          # uint8 [B, H, W, 3], CPU or CUDA
            w.write(chunk)

* RGB -> yuv420p: GPU frames are converted in torch on their device (colour.py), so only
  1.5 bytes/pixel reach the host (through pinned buffers, host_copy.py); CPU frames go through
  libswscale with the same matrix and 2x2 area chroma (within 1 level of the torch path, and
  much faster than torch on a CPU). BT.709, limited range, and the stream is tagged so.
* fps may be fractional (29.97 -> 30000/1001 exactly); frame i has pts i in a 1/fps time base.
* The audio is cut or padded with silence to exactly num_frames / fps at close time, and
  encoded incrementally as the video advances so the muxer never buffers the whole video
  (soundtrack.py).
* Output goes to a new, uniquely named hidden file in the target folder (``output.PartialFile``:
  created exclusively, written through its own descriptor) and is renamed onto `path` only
  after a successful close; an exception inside the ``with`` block, ``abort()`` or an encoder
  error deletes it, so a half-written MP4 is never left behind, and two writers of one name
  never share a file.
* ``movflags=+faststart`` puts the index first so browsers can start playing at once.
* ``encode_ahead=True`` runs encoding (and, for CPU frames, colour conversion) on a
  background thread with a bounded queue, so the renderer can compute the next chunk
  meanwhile (encode_ahead.py). An error in that thread is raised on the next ``write()`` or
  ``close()``.
* ``workers > 1`` (libx264 only) encodes consecutive *segments* of the video with that many
  independent x264 instances at once, in warm helper processes (``processes=False``: in
  threads, same bytes out); see segment_sink.py for why and how the segments form one stream.

How it is built: the writer owns the file (`PartialFile`, the container and its streams) and
chooses, once, in ``__init__``, a *sink* that turns chunks of frames into muxed packets:
`StreamSink` (one encoder stream, stream_sink.py) or `SegmentSink` (parallel x264 segments,
segment_sink.py), optionally fed from an `EncodeAhead` thread. The sink tells the
`AudioTrack` how far the video got, so the sound follows it. Encoder choice and settings
(`choose_encoder`, `auto_workers`, ...) live in encoders.py and are re-exported here.
"""
from __future__ import annotations

import contextlib
import functools
import os
from fractions import Fraction

import av
import numpy as np

from ..errors import SonicInputError
from ..types import AudioClip
from ..workers.pool import WorkerError, warm_pool
from ..workers.x264_segment import tag_bt709
from .colour import _as_tensor, rgb_to_yuv420p
from .encode_ahead import EncodeAhead
from .encoders import (
    AUTO_X264,
    as_fraction,
    auto_segment_frames,
    auto_workers,
    choose_encoder,
    nvenc_available,
    warm_encoders,
)
from .encoders import X264_SCRIPT as _X264_SCRIPT
from .encoders import codec_options as _codec_options
from .host_copy import Download as _Download
from .host_copy import PinnedRing, host_rows, may_alias, release
from .host_copy import PinnedRing as _PinnedRing
from .host_copy import may_alias as _may_alias
from .output import PartialFile
from .segment_sink import SegmentSink
from .soundtrack import AAC_FRAME, AAC_RATES, AudioTrack
from .stream_sink import StreamSink, no_sound

# Importable from here as before this module was split (callers, tests and benchmarks use them).
__all__ = [
    "AAC_FRAME",
    "AAC_RATES",
    "AUTO_X264",
    "_X264_SCRIPT",
    "Mp4Writer",
    "WorkerError",
    "_Download",
    "_PinnedRing",
    "_codec_options",
    "_may_alias",
    "as_fraction",
    "auto_segment_frames",
    "auto_workers",
    "choose_encoder",
    "nvenc_available",
    "warm_encoders",
    "warm_pool",
]


def _drop_chunk(item) -> None:
    """A queued chunk that will not be encoded (after an error or abort): free its host copy."""
    release(item[1])


class Mp4Writer:
    """Write frames (and an optional sound track) to an MP4; use as a context manager."""

    def __init__(
        self,
        path,
        width: int,
        height: int,
        fps,
        audio: AudioClip | None = None,
        crf: int = 18,
        preset: str = "auto",
        codec: str = "libx264",
        threads: int = 0,
        encode_ahead: bool = False,
        queue_chunks: int = 2,
        audio_bitrate: int | None = None,
        workers: int = 1,
        segment_frames: int = 0,
        total_frames: int | None = None,
        processes: bool = True,
    ):
        width, height = int(width), int(height)
        if width <= 0 or height <= 0:
            raise SonicInputError(f"Video size must be positive, got {width}x{height}.")
        if width % 2 or height % 2:
            raise SonicInputError(
                f"Video size {width}x{height} is not even; H.264 yuv420p needs an even width and height. "
                f"Use e.g. {width - width % 2}x{height - height % 2}."
            )
        self.path = os.fspath(path)
        self.width, self.height = width, height
        self.fps = as_fraction(fps)
        self.frames_written = 0  # frames accepted by write()
        self._closed = False
        self._partial: PartialFile | None = None
        self._container = None
        self._audio: AudioTrack | None = None
        self._sink: StreamSink | SegmentSink | None = None  # made once the streams exist
        self._ahead: EncodeAhead | None = None
        self._ring: PinnedRing | None = None  # host buffers for GPU frames, made on the first
        self._ring_slots = max(1, int(queue_chunks)) + 1 if encode_ahead else 1  # queued + being encoded

        # The one choice of how frames are encoded: parallel x264 segments or one encoder stream.
        self.workers = max(1, int(workers)) if codec == "libx264" else 1
        if self.workers > 1:
            self.segment_frames = int(segment_frames) or auto_segment_frames(width, height, self.workers, total_frames)
            # x264 in warm worker processes: in threads, its per-frame returns to Python contend
            # with the renderer for the GIL (CHANGELOG). Started now, they load while frames render.
            procs = warm_pool(_X264_SCRIPT, keep=self.workers) if processes else None
            if procs is not None:
                procs.warm(self.workers)
            make_sink = functools.partial(SegmentSink, fps=self.fps, codec=codec, crf=crf, preset=preset,
                                          threads=threads, workers=self.workers,
                                          segment_frames=self.segment_frames, procs=procs)
        else:
            make_sink = StreamSink

        try:
            self._partial = PartialFile(self.path)
            self.tmp_path = self._partial.tmp_path
        except OSError as e:
            raise SonicInputError(f"Cannot write the video '{self.path}': {e}. Check the folder exists and is writable.") from None
        try:
            self._container = av.open(self._partial.open_name, mode="w", format="mp4",
                                      options={"movflags": "+faststart"})
        except (OSError, av.error.FFmpegError) as e:
            self._partial.discard()
            raise SonicInputError(f"Cannot write the video '{self.path}': {e}. Check the folder exists and is writable.") from None
        try:
            self._setup_video(codec, crf, preset, threads)
            if audio is not None:
                self._audio = AudioTrack(self._container, audio, audio_bitrate, self.fps)
            follow = self._audio.follow if self._audio is not None else no_sound
            self._sink = make_sink(self._container, self._vstream, follow)
            if self._audio is not None and total_frames and (encode_ahead or self._sink.audio_ahead):
                self._audio.start_ahead(int(total_frames))
        except BaseException:
            self._discard()
            raise

        # CPU frames that may be the caller's memory are copied when something keeps them
        # after write() returns, so the caller may reuse its buffer at once.
        self._copy_cpu_frames = bool(encode_ahead) or self._sink.holds_rows
        if encode_ahead:
            # Looked up per chunk (not bound now): the chunk goes through self._encode as it is then.
            self._ahead = EncodeAhead(lambda item: self._encode(item), queue_chunks, drop=_drop_chunk)

    # ---------------------------------------------------------------- setup
    def _setup_video(self, codec, crf, preset, threads):
        try:
            st = self._container.add_stream(codec, rate=self.fps, options=_codec_options(codec, crf, preset))
        except (av.error.FFmpegError, ValueError) as e:
            raise SonicInputError(f"Video encoder '{codec}' is not available in this PyAV build ({e}). Use codec='libx264'.") from None
        st.width, st.height = self.width, self.height
        st.pix_fmt = "yuv420p"
        cc = st.codec_context
        cc.time_base = Fraction(1, 1) / self.fps
        cc.thread_count = int(threads)
        tag_bt709(cc)
        self._vstream = st

    # ---------------------------------------------------------------- public API
    @property
    def duration(self) -> float:
        """Seconds of video written so far."""
        return float(self.frames_written / self.fps)

    def write(self, frames) -> None:
        """Append a chunk of RGB frames: uint8 [B, H, W, 3] or [H, W, 3], torch (any device) or numpy."""
        if self._closed:
            raise RuntimeError("Mp4Writer is closed")
        self._raise_worker_error()
        t = _as_tensor(frames)
        if t.shape[1] != self.height or t.shape[2] != self.width:
            raise ValueError(f"frame size {t.shape[2]}x{t.shape[1]} does not match the writer's {self.width}x{self.height}")
        n = int(t.shape[0])
        if n == 0:
            return
        if t.device.type == "cpu":
            # CPU frames: libswscale does the same BT.709 / 2x2-area conversion (within 1 level of
            # colour.rgb_to_yuv420p) ~10x faster than torch on the CPU.
            arr = np.ascontiguousarray(t.detach().numpy())
            if self._copy_cpu_frames and may_alias(frames, t, arr):
                arr = arr.copy()
            item = ("rgb", arr)
        else:
            if self._ring is None:
                self._ring = PinnedRing(self._ring_slots)
            item = ("yuv", self._ring.download(rgb_to_yuv420p(t), self._raise_worker_error))
        if self._ahead is None:
            self._encode(item)
        else:
            self._ahead.put(item)
        self.frames_written += n

    def close(self) -> None:
        """Finish: flush encoders, pad/trim audio to the video length, rename into place."""
        if self._closed:
            return
        try:
            if self._ahead is not None:
                self._ahead.stop()
            self._raise_worker_error()
            self._finish()
        except BaseException:
            self._discard()
            raise
        self._closed = True
        self._partial.commit()

    def abort(self) -> None:
        """Stop and delete the partial output (nothing is left at `path` or the temp path)."""
        if self._closed:
            return
        try:
            if self._ahead is not None:
                self._ahead.stop(discard=True)
        finally:
            self._discard()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
            return False
        self.close()
        return False

    def __del__(self):
        with contextlib.suppress(Exception):
            if not self._closed:
                self.abort()

    # ---------------------------------------------------------------- internals
    def _raise_worker_error(self):
        if self._ahead is not None:
            self._ahead.check()

    def _encode(self, item):
        """Encode one chunk: ("yuv", packed I420 [B, H*W*3/2], or its host copy in flight) or
        ("rgb", [B, H, W, 3] uint8), on the encoding thread (the caller's, or EncodeAhead's);
        the sink muxes it, and the sound track up to the new video time."""
        kind, data = item
        self._sink.put(kind, host_rows(data))

    def _finish(self):
        self._sink.finish()  # every frame muxed; the sound track told the video's end
        if self._audio is not None:
            self._audio.finish(self._sink.frames_encoded)
        self._container.close()

    def _discard(self):
        self._closed = True
        if self._audio is not None:
            self._audio.stop()
        if self._sink is not None:
            self._sink.discard()
        with contextlib.suppress(Exception):
            self._container.close()
        if self._partial is not None:
            self._partial.discard()
