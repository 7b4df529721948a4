"""Streaming MP4 writer: H.264 (libx264 by default) + AAC, written atomically.

    with Mp4Writer("out.mp4", 512, 512, fps=25, audio=clip, encode_ahead=True) as w:
        for chunk in renderer:          # uint8 [B, H, W, 3], CPU or CUDA
            w.write(chunk)

* RGB -> yuv420p: GPU frames are converted in torch on their device (colour.py), so only
  1.5 bytes/pixel reach the host; CPU frames go through libswscale with the same matrix
  and 2x2 area chroma (within 1 level of the torch path, ~10x faster than torch on a CPU).
  BT.709, limited range, and the stream is tagged so.
* fps may be fractional (29.97 -> 30000/1001 exactly); frame i has pts i in a 1/fps time base.
* The audio is cut or padded with silence to exactly num_frames / fps at close time, and
  encoded incrementally as the video advances so the muxer never buffers the whole video.
* Output goes to a new, uniquely named hidden file in the target folder (``output.PartialFile``:
  created exclusively, written through its own descriptor) and is renamed onto `path` only
  after a successful close; an exception inside the ``with`` block, ``abort()`` or an encoder
  error deletes it, so a half-written MP4 is never left behind, and two writers of one name
  never share a file.
* ``movflags=+faststart`` puts the index first so browsers can start playing at once.
* ``encode_ahead=True`` runs encoding (and, for CPU frames, colour conversion) on a
  background thread with a bounded queue, so the renderer can compute the next chunk
  meanwhile. An error in that thread is raised on the next ``write()`` or ``close()``.
* ``workers > 1`` (libx264 only) encodes consecutive *segments* of the video with that many
  independent x264 instances at once. One x264, even with its own frame threads, tops out
  near 100 fps at 1024² however many cores a GPU server has; segments scale with cores.
  Each segment is a closed GOP that starts with an IDR frame and every instance is opened
  with identical settings, so all share one SPS/PPS and their packets, re-timed, form one
  valid H.264 stream (checked at run time: a differing header raises instead of writing a
  broken file). The instances run in warm worker processes (``workers/x264_segment.py``;
  ``processes=False`` or a child that cannot start: in threads, same bytes out), because in
  threads their per-frame returns to Python take the GIL from the renderer. Memory: at
  most ``workers + 1`` segments of frames are held, independent of the video's length.
"""
from __future__ import annotations

import functools
import logging
import os
import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction

import av
import numpy as np
import torch

from ..config import ENCODERS
from ..errors import SonicInputError
from ..system import release_free_memory, usable_cpus
from ..types import AudioClip
from ..workers import x264_segment
from ..workers.pool import WorkerError, warm_pool
from ..workers.x264_segment import tag_bt709, video_frame
from .output import PartialFile
from av.video.reformatter import VideoReformatter

from .colour import _as_tensor, rgb_to_yuv420p

log = logging.getLogger(__name__)

AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
AAC_FRAME = 1024
_NTSC_BASES = (24, 30, 48, 60, 120)
_STOP = object()
_X264_SCRIPT = os.path.abspath(x264_segment.__file__)


def as_fraction(fps) -> Fraction:
    """fps as an exact Fraction; NTSC rates given as floats (29.97, 23.976, 59.94) snap to N*1000/1001."""
    if isinstance(fps, Fraction):
        f = fps
    elif isinstance(fps, int):
        f = Fraction(fps)
    else:
        x = float(fps)
        if not np.isfinite(x) or x <= 0:
            raise SonicInputError(f"fps must be a positive number, got {fps!r}.")
        for base in _NTSC_BASES:
            ntsc = base * 1000 / 1001
            if abs(x - ntsc) < 2e-3:
                return Fraction(base * 1000, 1001)
        f = Fraction(x).limit_denominator(1001)
    if f <= 0:
        raise SonicInputError(f"fps must be a positive number, got {fps!r}.")
    return f


# preset "auto" for x264: superfast's search (diamond motion search, subpel refinement 1, intra
# partitions only) but with the macroblock-tree rate control and 10-frame lookahead that
# superfast turns off. On rendered talking heads at 1024² (two faces, crf 18, one thread) this
# encodes 1.65-1.75x faster than veryfast, for 6-15 % larger files at PSNR-Y within 0.2 dB;
# plain superfast is 1.4x faster but 2.4-2.7x larger (without mbtree, crf spends bits on
# static background). Measured with benchmarks/bench.py's encoder sweep.
AUTO_X264 = {"preset": "superfast", "x264-params": "mbtree=1:rc-lookahead=10"}


def _codec_options(codec: str, crf: int, preset: str) -> dict:
    if "nvenc" in codec:
        p = preset if preset.startswith("p") else "p4"
        return {"rc": "vbr", "cq": str(int(crf)), "preset": p}
    if codec == "libx264" and preset == "auto":
        return {"crf": str(int(crf)), **AUTO_X264}
    if codec in ("libx264", "libx265"):
        return {"crf": str(int(crf)), "preset": "superfast" if preset == "auto" else str(preset)}
    return {}


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
        self._frames_encoded = 0  # frames handed to the encoder (worker side)
        self._closed = False
        self._error: BaseException | None = None
        self._worker: threading.Thread | None = None
        self._sws = VideoReformatter()  # cached swscale context for CPU frames
        self._ring: _PinnedRing | None = None  # host buffers for GPU frames, made on the first
        self._ring_slots = max(1, int(queue_chunks)) + 1 if encode_ahead else 1  # queued + being encoded
        self._codec, self._crf, self._preset, self._threads = codec, int(crf), str(preset), int(threads)
        self.workers = max(1, int(workers)) if codec == "libx264" else 1
        if self.workers > 1:
            self.segment_frames = int(segment_frames) or auto_segment_frames(width, height, self.workers, total_frames)
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sonic-x264")
            self._segment: list = []  # (kind, row) of the segment being filled
            self._pending: deque[tuple[int, int, Future]] = deque()  # (first frame, frames, future) in order
            self._segment_start = 0
            # x264 in warm worker processes: in threads, its per-frame returns to Python contend
            # with the renderer for the GIL (1024² render 1280 -> 102 frames/s beside 8 x264
            # threads, 980 beside 8 processes). Started now, they load while frames render.
            self._procs = warm_pool(_X264_SCRIPT, keep=self.workers) if processes else None
            if self._procs is not None:
                self._procs.warm(self.workers)

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
            self._setup_audio(audio, audio_bitrate)
            if self.workers > 1:
                self._vstream.codec_context.open()  # its header (avcC) is what every segment must match
            if self._astream is not None and total_frames and (encode_ahead or self.workers > 1):
                self._start_audio_ahead(int(total_frames))
        except BaseException:
            self._discard()
            raise

        if encode_ahead:
            self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(queue_chunks)))
            self._worker = threading.Thread(target=self._run_worker, name="sonic-mp4-encoder", daemon=True)
            self._worker.start()

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

    def _setup_audio(self, audio: AudioClip | None, bitrate):
        self._astream = None
        self._audio = None
        self._audio_pos = 0  # samples encoded so far
        self._audio_thread: threading.Thread | None = None
        if audio is None:
            return
        from ..audio.decode import resample_clip

        ch = audio.samples.shape[0]
        out_ch = 1 if ch == 1 else 2  # AAC here: mono or stereo (FFmpeg downmix for >2)
        rate = audio.sample_rate if audio.sample_rate in AAC_RATES else 48000
        clip = resample_clip(audio, sample_rate=rate, channels=out_ch)
        self._audio = np.asarray(clip.samples, dtype=np.float32)  # read in 1024-sample blocks: no copy needed
        self._audio_rate = rate
        self._layout = "mono" if out_ch == 1 else "stereo"
        st = self._container.add_stream("aac", rate=rate, layout=self._layout)
        st.bit_rate = int(bitrate or (96000 if out_ch == 1 else 160000))
        st.codec_context.time_base = Fraction(1, rate)
        self._astream = st

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
            # colour.rgb_to_yuv420p) ~10x faster than torch on the CPU. Copy when the array is the
            # caller's memory and the encoder runs ahead, so the caller may reuse its buffer at once.
            arr = np.ascontiguousarray(t.detach().numpy())
            if (self._worker is not None or self.workers > 1) and _may_alias(frames, t, arr):
                arr = arr.copy()
            item = ("rgb", arr)
        else:
            if self._ring is None:
                self._ring = _PinnedRing(self._ring_slots)
            item = ("yuv", self._ring.download(rgb_to_yuv420p(t), self._raise_worker_error))
        if self._worker is None:
            self._encode(item)
        else:
            self._put(item)
        self.frames_written += n

    def close(self) -> None:
        """Finish: flush encoders, pad/trim audio to the video length, rename into place."""
        if self._closed:
            return
        try:
            self._stop_worker()
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
            self._stop_worker(discard=True)
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
        try:
            if not self._closed:
                self.abort()
        except Exception:
            pass

    # ---------------------------------------------------------------- internals
    def _put(self, item):
        while True:
            self._raise_worker_error()
            if not self._worker.is_alive():
                raise RuntimeError("Mp4Writer encoder thread stopped unexpectedly")
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _run_worker(self):
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None:
                if isinstance(item[1], _Download):
                    item[1].release()
                continue  # drain after a failure so the caller never blocks
            try:
                self._encode(item)
            except BaseException as e:  # propagate to the caller's next write()/close()
                self._error = e

    def _stop_worker(self, discard: bool = False):
        if self._worker is None:
            return
        if discard and self._error is None:
            self._error = _Aborted()
        while self._worker.is_alive():
            try:
                self._queue.put(_STOP, timeout=0.2)
                break
            except queue.Full:
                continue
        self._worker.join()
        self._worker = None

    def _raise_worker_error(self):
        if self._error is not None and not isinstance(self._error, _Aborted):
            err = self._error
            raise err

    def _yuv_frame(self, kind: str, row: np.ndarray) -> av.VideoFrame:
        return video_frame(kind, row, self.width, self.height, self._sws)

    def _encode(self, item):
        """Encode one chunk: ("yuv", packed I420 [B, H*W*3/2]) or ("rgb", [B, H, W, 3] uint8),
        then the audio up to the new video time."""
        kind, data = item
        if isinstance(data, _Download):
            data = data.wait()
        if self.workers > 1:
            # Rows are only referenced here; the pool threads turn them into frames (and, for
            # CPU frames, convert colours), so that per-frame work runs in parallel too.
            for k in range(len(data)):
                self._segment.append((kind, data[k]))
                if len(self._segment) >= self.segment_frames:
                    self._submit_segment()
            self._mux_ready(block=False)
            return
        st, mux = self._vstream, self._container.mux
        for row in data:
            frame = self._yuv_frame(kind, row)
            frame.pts = self._frames_encoded
            frame.time_base = st.codec_context.time_base
            mux(st.encode(frame))
            self._frames_encoded += 1
        self._encode_audio(final=False)

    # ---------------------------------------------------------------- parallel segments
    def _submit_segment(self):
        rows, self._segment = self._segment, []
        if not rows:
            return
        while len(self._pending) > self.workers:  # bound the frames held in memory
            self._mux_head()
        self._pending.append((self._segment_start, len(rows), self._pool.submit(self._encode_segment, rows)))
        self._segment_start += len(rows)

    def _encode_segment(self, rows: list) -> tuple[list, bytes | None]:
        """One closed GOP from a fresh x264 with the stream's settings (runs on a pool thread,
        which hands the frames to a worker process when one can be had)."""
        spec = {"codec": self._codec, "width": self.width, "height": self.height,
                "fps": [self.fps.numerator, self.fps.denominator],
                "threads": self._threads or max(1, usable_cpus() // self.workers),
                "options": _codec_options(self._codec, self._crf, self._preset), "kind": rows[0][0]}
        procs = self._procs
        if procs is not None and all(kind == spec["kind"] for kind, _ in rows):
            try:
                return x264_segment.unpack_reply(procs.call([x264_segment.pack_request(spec)] + [row for _, row in rows]))
            except WorkerError as e:  # encode here instead: same settings, same stream
                log.warning("x264 worker process failed (%s); this video's segments are encoded in threads", e)
                self._procs = None
        return x264_segment.encode_segment(spec, rows)

    def _mux_head(self):
        start, count, fut = self._pending.popleft()
        packets, extradata = fut.result()
        if extradata != self._vstream.codec_context.extradata:
            raise RuntimeError("parallel H.264 segments got different stream headers; use workers=1")
        tb = Fraction(1, 1) / self.fps
        for p in packets:
            p.pts += start
            p.dts += start
            p.time_base = tb
            p.stream = self._vstream
        self._container.mux(packets)
        self._frames_encoded = start + count
        self._encode_audio(final=False)
        del packets
        # Freed segments (frames, x264 instances) otherwise stay resident as heap fragmentation
        # and RSS creeps up with the video's length (H100 1024², 1 vs 10 min: +19 % untrimmed,
        # +8 % trimmed per segment; 10 min took 63.7 s untrimmed and 64.6 s trimmed).
        release_free_memory()

    def _mux_ready(self, block: bool):
        while self._pending and (block or self._pending[0][2].done()):
            self._mux_head()

    def _audio_target(self, final: bool) -> int:
        """Samples of audio that belong with the video encoded so far (whole AAC frames until the end)."""
        target = int(round(self._frames_encoded * self._audio_rate / self.fps))
        return target if final else target - target % AAC_FRAME

    def _encode_audio(self, final: bool):
        if self._astream is None:
            return
        target = self._audio_target(final)
        if self._audio_thread is not None:
            if final:
                self._audio_thread.join()
                if self._audio_error is not None:
                    raise self._audio_error
            ready = self._audio_packets
            batch = []
            while ready and ready[0].pts < target:
                batch.append(ready.popleft())
            self._container.mux(batch)
            if not final:
                return
            self._audio_thread = None
            ready.clear()  # encoded past a video that ended early: not muxed
        self._encode_audio_span(target)

    def _audio_frame(self, pos: int, stop: int) -> av.AudioFrame:
        """Samples [pos, stop) of the sound track as one frame (silence past its end); the
        encoder's resampler cuts it into AAC frames in C, no Python loop per 1024 samples."""
        src = self._audio
        block = np.zeros((src.shape[0], stop - pos), dtype=np.float32)
        avail = max(0, min(stop, src.shape[1]) - pos)
        if avail:
            block[:, :avail] = src[:, pos:pos + avail]
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=self._layout)
        frame.sample_rate = self._audio_rate
        frame.pts = pos
        frame.time_base = Fraction(1, self._audio_rate)
        return frame

    def _encode_audio_span(self, target: int) -> None:
        """Encode and mux the sound track up to sample `target`."""
        if target > self._audio_pos:
            self._container.mux(self._astream.encode(self._audio_frame(self._audio_pos, target)))
            self._audio_pos = target

    # ---------------------------------------------------------------- sound track ahead of the video
    def _start_audio_ahead(self, total_frames: int):
        """Encode the whole sound track (to the promised video length) on its own thread.

        AAC encoding of 15 s took 0.4-0.6 s on a busy 16-core host, and done between video
        segments it sat on the one thread that muxes them, holding back every later segment.
        The sound is known up front, so it is encoded at once, in parallel; the muxing thread
        only interleaves finished packets (about 1 % of the decoded audio's size).
        """
        self._astream.codec_context.open()
        self._audio_packets: deque = deque()
        self._audio_error: BaseException | None = None
        self._audio_stop = False
        end = int(round(total_frames * self._audio_rate / self.fps))
        self._audio_thread = threading.Thread(target=self._run_audio_ahead, args=(end,), name="sonic-aac", daemon=True)
        self._audio_thread.start()

    def _run_audio_ahead(self, end: int):
        try:
            span = 10 * self._audio_rate
            for pos in range(0, end, span):
                if self._audio_stop:
                    return
                self._audio_packets.extend(self._astream.encode(self._audio_frame(pos, min(end, pos + span))))
            self._audio_pos = end
        except BaseException as e:  # raised on the muxing thread at close
            self._audio_error = e

    def _finish(self):
        if self.workers > 1:
            self._submit_segment()
            self._mux_ready(block=True)
            self._pool.shutdown()
        self._encode_audio(final=True)
        if self.workers == 1:
            self._container.mux(self._vstream.encode(None))
        if self._astream is not None:
            end = self._audio_target(final=True)
            self._container.mux([p for p in self._astream.encode(None) if p.pts is None or p.pts < end])
        self._container.close()

    def _discard(self):
        self._closed = True
        if getattr(self, "_audio_thread", None) is not None:
            self._audio_stop = True
            self._audio_thread.join()
        if self.workers > 1:
            self._pool.shutdown(wait=True, cancel_futures=True)
        try:
            self._container.close()
        except Exception:
            pass
        if getattr(self, "_partial", None) is not None:
            self._partial.discard()


def auto_segment_frames(width: int, height: int, workers: int, total_frames: int | None = None,
                        budget_bytes: int = 768 << 20, rounds: int = 2) -> int:
    """Frames per parallel segment, 24-250: as long as the memory budget for `workers + 1`
    segments of yuv420p frames allows (longer segments = fewer IDR frames = smaller files),
    and, when the video's length is known, no longer than an even share of `rounds` segments
    per worker. One round would leave the last worker starting only when the renderer
    reaches the clip's last segment; with two, the first segments finish early and the
    tail after the last rendered frame is half as long."""
    per_frame = width * height * 3 // 2
    n = budget_bytes // (per_frame * (workers + 1))
    if total_frames:
        n = min(n, -(-int(total_frames) // (workers * max(1, int(rounds)))))
    return int(np.clip(n, 24, 250))


@functools.lru_cache(maxsize=None)
def nvenc_available() -> bool:
    """True when FFmpeg's NVENC H.264 encoder opens here (an NVIDIA card with NVENC + driver;
    datacentre H100/H200 have none). Probed once per process with a tiny frame."""
    try:
        cc = av.CodecContext.create("h264_nvenc", "w")
        cc.width, cc.height, cc.pix_fmt, cc.time_base = 256, 256, "yuv420p", Fraction(1, 25)
        cc.open()
        return True
    except Exception:  # codec missing from this PyAV build, no driver, no NVENC unit
        return False


def choose_encoder(width: int, height: int, encoder: str = "auto", workers: int = 0) -> tuple[str, int]:
    """(codec, parallel x264 instances) for a video: NVENC when the card has it, else libx264
    with `auto_workers` segments; an explicit `encoder`/`workers` overrides the choice."""
    if encoder not in ENCODERS:
        raise SonicInputError(f"Setting 'encoder' must be one of {', '.join(ENCODERS)} (got {encoder!r}).")
    codec = encoder if encoder != "auto" else ("h264_nvenc" if nvenc_available() else "libx264")
    if codec != "libx264":
        return codec, 1
    return codec, int(workers) if workers else auto_workers(width, height)


def warm_encoders(width: int, height: int, encoder: str = "auto", workers: int = 0) -> None:
    """Start the x264 helper processes a video of this size will use, without waiting for them.
    A job calls this as soon as it knows its frame size, so a first job's helpers import PyAV
    while the renderer is built instead of when the first frames arrive; warm ones are reused."""
    codec, n = choose_encoder(width, height, encoder, workers)
    if codec == "libx264" and n > 1:
        warm_pool(_X264_SCRIPT, keep=n).warm(n)


def auto_workers(width: int, height: int, cpus: int | None = None) -> int:
    """Parallel x264 instances worth running: one x264 (frame-threaded) keeps up to ~4 cores
    busy; beyond that, segments add throughput. Small frames encode fast enough alone."""
    cpus = cpus or usable_cpus()
    if cpus < 6 or width * height < 384 * 384:
        return 1
    return int(min(8, cpus // 2))


class _PinnedRing:
    """A fixed few page-locked host buffers that carry rendered chunks off the GPU, reused chunk
    after chunk.

    A pageable copy of one 64-frame chunk at 1024² (100 MB of I420) took 89 ms on an H100 host
    (1.1 GB/s, serial on the thread that also drives the renderer); into pinned memory it takes
    2.5 ms and need not block at all: `write()` returns at once, the renderer queues the next
    chunk, and the encoder thread waits on the copy's event only when it needs the pixels.
    It then copies them out to ordinary memory (~15 ms, GIL released) and hands the buffer
    back, so pinned memory is `slots` chunks whatever the clip's length. (Holding the pinned
    chunks until their last frame was encoded let torch's caching host allocator grow to
    16-17 blocks, 1.8 GB, and peak RSS of a 10-minute clip 6-18 % above a 1-minute one.)
    """

    def __init__(self, slots: int):
        self._free: queue.Queue = queue.Queue()
        for _ in range(slots):
            self._free.put(None)  # allocated on first use, sized to the chunk

    def download(self, src: torch.Tensor, check):
        """Start copying `src` (CUDA) into a free buffer: a `_Download`, or a numpy array where
        no pinned memory can be had. `check()` runs while no buffer is free (it raises the
        encoder thread's error instead of waiting forever)."""
        while True:
            try:
                buf = self._free.get(timeout=0.2)
                break
            except queue.Empty:
                check()
        try:
            if buf is None or buf.numel() < src.numel():
                buf = None  # what goes back to the ring if the allocation below fails
                buf = torch.empty(src.numel(), dtype=src.dtype, pin_memory=True)
            return _Download(self, buf, src)
        except RuntimeError as e:
            log.debug("pinned host copy unavailable (%s)", e)
            self._free.put(buf)
            return src.cpu().numpy()

    def give_back(self, buf) -> None:
        self._free.put(buf)


class _Download:
    """One chunk's device -> host copy in flight into a `_PinnedRing` buffer."""

    def __init__(self, ring: _PinnedRing, buf: torch.Tensor, src: torch.Tensor):
        self.ring, self.buf = ring, buf
        self.view = buf[:src.numel()].view(src.shape)
        self.view.copy_(src, non_blocking=True)
        self.ready = torch.cuda.Event()
        self.ready.record()

    def wait(self) -> np.ndarray:
        """The pixels in ordinary memory; the pinned buffer goes back to the ring at once."""
        self.ready.synchronize()
        out = self.view.numpy().copy()
        self.release()
        return out

    def release(self) -> None:
        if self.buf is not None:
            self.ready.synchronize()  # the copy must finish before the buffer is reused
            self.ring.give_back(self.buf)
            self.buf = self.view = None


class _Aborted(Exception):
    pass


def _may_alias(original, tensor: torch.Tensor, arr: np.ndarray) -> bool:
    """True when `arr` may be memory the caller still owns (so the worker must get a copy)."""
    if isinstance(original, np.ndarray):
        return np.may_share_memory(original, arr)
    if isinstance(original, torch.Tensor):
        return arr.ctypes.data == tensor.data_ptr() and original.device.type == "cpu" and original.dtype == torch.uint8
    return False
