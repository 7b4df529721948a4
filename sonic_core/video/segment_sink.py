"""`SegmentSink`: a video encoded as consecutive segments by several x264 instances at once.

One x264, even with its own frame threads, tops out near 100 fps at 1024² however many cores
a GPU server has; segments scale with cores. Each segment is a closed GOP that starts with an
IDR frame and every instance is opened with identical settings, so all share one SPS/PPS and
their packets, re-timed, form one valid H.264 stream (checked here: a differing header raises
instead of writing a broken file). The instances run in warm worker processes
(``workers/x264_segment.py``; no pool, or a child that cannot start: in threads, same bytes
out), because in threads their per-frame returns to Python take the GIL from the renderer.
Memory: at most ``workers + 1`` segments of frames are held, independent of the video's length.

The sink interface is described in `stream_sink`.
"""
from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction

from ..system import release_free_memory, usable_cpus
from ..workers import x264_segment
from ..workers.pool import WorkerError
from .encoders import codec_options
from .stream_sink import no_sound

log = logging.getLogger(__name__)


class SegmentSink:
    """Rows collect into segments of `segment_frames`; each is encoded by a fresh x264 on a pool
    thread (which hands it to a warm helper process from `procs` when it can) and muxed, in
    order, as soon as it and all before it are done."""

    holds_rows = True  # rows wait in the segment being filled and in the pool's queue
    # Segments are muxed on one thread between encodes: AAC done there held back every later
    # segment, so the sound is encoded on its own thread when the video's length is known.
    audio_ahead = True

    def __init__(self, container, stream, follow=no_sound, *, fps: Fraction, codec: str, crf: int, preset: str,
                 threads: int, workers: int, segment_frames: int, procs=None):
        self._container, self._stream, self._follow = container, stream, follow
        self._width, self._height, self._fps = stream.width, stream.height, fps
        self._codec, self._crf, self._preset, self._threads = codec, int(crf), str(preset), int(threads)
        self.workers = workers
        self.segment_frames = segment_frames
        self._procs = procs  # a warm worker pool, or None: encode in the pool threads
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="sonic-x264")
        self._segment: list = []  # (kind, row) of the segment being filled
        self._pending: deque[tuple[int, int, Future]] = deque()  # (first frame, frames, future) in order
        self._segment_start = 0
        self.frames_encoded = 0
        stream.codec_context.open()  # its header (avcC) is what every segment must match

    def put(self, kind: str, rows) -> None:
        # Rows are only referenced here; the pool threads turn them into frames (and, for
        # CPU frames, convert colours), so that per-frame work runs in parallel too.
        for k in range(len(rows)):
            self._segment.append((kind, rows[k]))
            if len(self._segment) >= self.segment_frames:
                self._submit_segment()
        self._mux_ready(block=False)

    def finish(self) -> None:
        self._submit_segment()
        self._mux_ready(block=True)
        self._pool.shutdown()
        self._follow(self.frames_encoded, True)

    def discard(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ---------------------------------------------------------------- internals
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
        spec = {"codec": self._codec, "width": self._width, "height": self._height,
                "fps": [self._fps.numerator, self._fps.denominator],
                "threads": self._threads or max(1, usable_cpus() // self.workers),
                "options": codec_options(self._codec, self._crf, self._preset), "kind": rows[0][0]}
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
        if extradata != self._stream.codec_context.extradata:
            raise RuntimeError("parallel H.264 segments got different stream headers; use workers=1")
        tb = Fraction(1, 1) / self._fps
        for p in packets:
            p.pts += start
            p.dts += start
            p.time_base = tb
            p.stream = self._stream
        self._container.mux(packets)
        self.frames_encoded = start + count
        self._follow(self.frames_encoded, False)
        del packets
        # Freed segments (frames, x264 instances) otherwise stay resident as heap fragmentation
        # and RSS creeps up with the video's length (H100 1024², 1 vs 10 min: +19 % untrimmed,
        # +8 % trimmed per segment; 10 min took 63.7 s untrimmed and 64.6 s trimmed).
        release_free_memory()

    def _mux_ready(self, block: bool):
        while self._pending and (block or self._pending[0][2].done()):
            self._mux_head()
