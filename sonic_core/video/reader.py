"""Video in: decode a talking-head video into RGB frames on a constant-rate timeline.

A dubbing job reads its video twice (once to track the face, once to composite), so only a
bounded window of frames is ever in memory. Phone clips are turned upright by their display
matrix; variable frame rate is resampled onto a constant one by presentation time; a clip
shorter than its new audio plays forward and back (ping-pong), which never jumps.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..errors import SonicInputError, check_input_file

# Frames decoded ahead and kept for out-of-order reads (ping-pong runs backwards): bytes.
CACHE_BYTES = 512 * 1024 * 1024


def upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """The frame as it is displayed: `rotation` is the display matrix's counter-clockwise angle."""
    k = round(rotation / 90.0) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def pingpong(n_out: int, n_src: int) -> np.ndarray:
    """Source indices [n_out] that play 0..n_src-1 forward, then back, then forward ...

    The turning frames are not repeated, so motion reverses without a hold or a jump."""
    k = np.arange(n_out, dtype=np.int64)
    if n_src <= 1:
        return np.zeros(n_out, np.int64)
    period = 2 * n_src - 2
    j = k % period
    return np.where(j < n_src, j, period - j)


def constant_rate(times: np.ndarray, fps: float) -> np.ndarray:
    """Indices of decoded frames (presentation `times`, seconds, sorted) shown at each tick of a
    constant `fps` clock over the video's length: the latest frame at or before each tick."""
    if len(times) == 0:
        return np.zeros(0, np.int64)
    t0 = float(times[0])
    step = float(np.median(np.diff(times))) if len(times) > 1 else 1.0 / fps
    end = float(times[-1]) + step  # the last frame lasts one typical frame interval
    ticks = t0 + np.arange(max(1, int(np.floor((end - t0) * fps + 1e-6)))) / fps
    return np.clip(np.searchsorted(times, ticks + 1e-6, side="right") - 1, 0, len(times) - 1).astype(np.int64)


@dataclass
class VideoInfo:
    width: int  # as displayed (after rotation)
    height: int
    fps: float  # the stream's average rate (frames per second)
    rotation: int  # display matrix angle, degrees counter-clockwise
    has_audio: bool


class VideoFile:
    """A video file's frames by index, upright RGB uint8 [H,W,3], read in order or out of it.

    `times` (presentation time of every decoded frame, seconds) is known after `scan()`;
    `frames(indices)` then returns any frames, decoding forward and seeking back as needed.
    """

    def __init__(self, path: str | os.PathLike):
        import av

        self.path = os.fspath(path)
        check_input_file(self.path, "Video", "a video file", "video")
        try:
            container = av.open(self.path)
        except av.error.FFmpegError as e:
            raise SonicInputError(f"Video file '{self.path}' could not be opened ({e.__class__.__name__}: "
                                  f"{e.strerror or e}). It is corrupt or not a video; use an MP4, MOV, MKV or WebM.") from None
        with container:
            if not container.streams.video:
                kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
                raise SonicInputError(f"File '{self.path}' has no video track (it contains: {kinds}). "
                                      "Pass a video of the person speaking.")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 25.0
            self._has_audio = bool(container.streams.audio)
            dur = float(stream.duration * stream.time_base) if stream.duration else (
                container.duration / 1e6 if container.duration else 0.0)
            self.estimated_frames = int(stream.frames or round(dur * fps) or 0)
        self.fps = fps if 1.0 <= fps <= 240.0 else 25.0
        self.times: np.ndarray | None = None
        self.rotation = 0
        self.width = self.height = 0
        self._container = None
        self._next = 0  # index of the frame the open decoder yields next
        self._iter = None
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    @property
    def info(self) -> VideoInfo:
        return VideoInfo(self.width, self.height, self.fps, self.rotation, self._has_audio)

    # -------------------------------------------------------------- decoding
    def _open(self):
        import av

        self.close()
        self._container = av.open(self.path)
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._stream = stream
        self._iter = self._container.decode(stream)
        self._next = 0

    def _decoded(self):
        """The open decoder's next frame as (time, upright rgb), or None at the end."""
        import av

        while True:
            try:
                frame = next(self._iter)
            except StopIteration:
                return None
            except av.error.FFmpegError as e:
                if self.times is None:  # the first read: a broken tail ends the video there
                    return None
                raise SonicInputError(f"Video file '{self.path}' could not be decoded at frame {self._next} "
                                      f"({e}); re-encode it (e.g. to H.264 MP4).") from None
            if frame.pts is None and frame.time is None:
                continue
            rot = int(getattr(frame, "rotation", 0) or 0)
            return float(frame.time if frame.time is not None else 0.0), upright(frame.to_ndarray(format="rgb24"), rot), rot

    def scan(self):
        """Decode every frame once, in order: yields (index, rgb). Fills `times` at the end."""
        self._open()
        times = []
        while True:
            got = self._decoded()
            if got is None:
                break
            t, rgb, rot = got
            if times and t <= times[-1]:  # out-of-order or duplicate timestamps: keep decode order
                t = times[-1] + 1e-6
            if not times:
                self.rotation, self.height, self.width = rot, rgb.shape[0], rgb.shape[1]
            times.append(t)
            yield len(times) - 1, rgb
        self.close()
        if not times:
            raise SonicInputError(f"Video file '{self.path}' has no decodable frames; re-encode it (e.g. to H.264 MP4).")
        self.times = np.asarray(times, np.float64)

    def frames(self, indices) -> np.ndarray:
        """Frames [len(indices),H,W,3] uint8 for decoded frame `indices` (any order, repeats allowed)."""
        if self.times is None:
            raise RuntimeError("scan() the video before reading frames by index")
        want = [int(i) for i in indices]
        missing = sorted({i for i in want if i not in self._cache})
        if missing:
            self._fill(missing)
        return np.stack([self._cache[i] for i in want])

    def _fill(self, missing: list[int]) -> None:
        lo, hi = missing[0], missing[-1]
        per = self.width * self.height * 3
        budget = max(len(missing), CACHE_BYTES // per)
        asked = set(missing)
        # Going back (ping-pong): decode a block ending at the frames asked for, to serve the
        # next requests backwards from memory instead of seeking for each.
        if self._iter is None or lo < self._next or lo - self._next > 2 * budget:
            start = max(0, min(lo, hi - budget + 1)) if lo < self._next else lo
            self._seek(start)
        while self._next <= hi:
            got = self._decoded()
            if got is None:
                break
            self._cache[self._next] = got[1]
            self._cache.move_to_end(self._next)
            self._next += 1
            while len(self._cache) > budget and next(iter(self._cache)) not in asked:
                self._cache.popitem(last=False)
        absent = [i for i in missing if i not in self._cache]
        if absent:
            raise SonicInputError(f"Video file '{self.path}' ended early: frame {absent[0]} of {len(self.times)} "
                                  "could not be read again; re-encode it (e.g. to H.264 MP4).")

    def _seek(self, index: int) -> None:
        """Position the decoder so that its next frame is `index`."""
        import av

        if self._iter is None or index < self._next:
            self._open()
            if index > 0:
                stream = self._stream
                target = self.times[index]
                try:
                    self._container.seek(int(target / stream.time_base), stream=stream, backward=True)
                    self._iter = self._container.decode(stream)
                except av.error.FFmpegError:
                    self._open()  # not seekable: decode from the start
                    self._skip_to(index)
                    return
                self._next = -1  # unknown until a frame's time is seen
                self._skip_to(index)
                return
        self._skip_to(index)

    def _skip_to(self, index: int) -> None:
        target = self.times[index] - 1e-6
        while True:
            if self._next >= 0 and self._next >= index:
                return
            got = self._decoded()
            if got is None:
                return
            t = got[0]
            j = int(np.searchsorted(self.times, t - 1e-6))  # this frame's decoded index
            self._next = j + 1
            if t >= target and j >= index:
                self._cache[j] = got[1]
                return

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = None
        self._iter = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        self._cache.clear()


class FrameArray:
    """In-memory frames (a ComfyUI IMAGE batch, or a uint8 array) behind VideoFile's interface."""

    def __init__(self, frames, fps: float, name: str = "the video frames"):
        import torch

        if isinstance(frames, torch.Tensor):
            frames = frames.detach().cpu()
            frames = frames.numpy() if frames.dtype == torch.uint8 else (frames.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        a = np.asarray(frames)
        if a.ndim != 4 or a.shape[-1] not in (3, 4) or a.shape[0] == 0:
            raise SonicInputError(f"{name} must be frames [count, height, width, 3], got shape {tuple(a.shape)}.")
        if a.dtype != np.uint8:
            a = (np.clip(a.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
        self._a = a[..., :3]
        self.path = name
        self.fps = float(fps)
        self.times = np.arange(len(a), dtype=np.float64) / self.fps
        self.height, self.width = int(a.shape[1]), int(a.shape[2])
        self.rotation = 0
        self._has_audio = False
        self.estimated_frames = len(a)

    info = VideoFile.info

    def scan(self):
        for i in range(len(self._a)):
            yield i, self._a[i]

    def frames(self, indices) -> np.ndarray:
        return self._a[np.asarray(indices, np.int64)]

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass
