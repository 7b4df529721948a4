"""The MP4's sound track: AAC, encoded as the video advances and cut to the video's length.

The muxer interleaves by time, so audio that lags the video makes it buffer video packets, and
audio that never comes makes it buffer the whole video. `AudioTrack.follow(n)` therefore
encodes the sound up to the time of the `n` video frames encoded so far, in whole AAC frames;
at the end (`final=True`, then `finish`) the sound is cut or padded with silence to exactly
`n / fps`. When the video's length is known up front, `start_ahead` encodes the whole sound
on its own thread instead and `follow` only interleaves the finished packets.
"""
from __future__ import annotations

import threading
from collections import deque
from fractions import Fraction

import av
import numpy as np

from ..types import AudioClip

AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
AAC_FRAME = 1024


class AudioTrack:
    """The AAC stream of one MP4 being written; added to `container` on construction (so after
    the video stream, whose index is 0)."""

    def __init__(self, container, clip: AudioClip, bitrate: int | None, fps: Fraction):
        from ..audio.decode import resample_clip

        ch = clip.samples.shape[0]
        out_ch = 1 if ch == 1 else 2  # AAC here: mono or stereo (FFmpeg downmix for >2)
        rate = clip.sample_rate if clip.sample_rate in AAC_RATES else 48000
        clip = resample_clip(clip, sample_rate=rate, channels=out_ch)
        self._samples = np.asarray(clip.samples, dtype=np.float32)  # read in 1024-sample blocks: no copy needed
        self._rate = rate
        self._layout = "mono" if out_ch == 1 else "stereo"
        self._fps = fps
        self._container = container
        self._pos = 0  # samples encoded so far
        self._thread: threading.Thread | None = None  # encoding ahead, see start_ahead()
        st = container.add_stream("aac", rate=rate, layout=self._layout)
        st.bit_rate = int(bitrate or (96000 if out_ch == 1 else 160000))
        st.codec_context.time_base = Fraction(1, rate)
        self.stream = st

    # ---------------------------------------------------------------- following the video
    def _target(self, video_frames: int, final: bool) -> int:
        """Samples of audio that belong with `video_frames` frames (whole AAC frames until the end)."""
        target = round(video_frames * self._rate / self._fps)
        return target if final else target - target % AAC_FRAME

    def follow(self, video_frames: int, final: bool = False) -> None:
        """Mux the sound up to the time of `video_frames` encoded frames; `final`: the video
        ends there (the sound is padded to it; packets encoded ahead past it are dropped)."""
        target = self._target(video_frames, final)
        if self._thread is not None:
            if final:
                self._thread.join()
                if self._error is not None:
                    raise self._error
            ready = self._packets
            batch = []
            while ready and ready[0].pts < target:
                batch.append(ready.popleft())
            self._container.mux(batch)
            if not final:
                return
            self._thread = None
            ready.clear()  # encoded past a video that ended early: not muxed
        self._encode_span(target)

    def finish(self, video_frames: int) -> None:
        """Flush the encoder, keeping only packets that start before the video's end."""
        end = self._target(video_frames, final=True)
        self._container.mux([p for p in self.stream.encode(None) if p.pts is None or p.pts < end])

    def stop(self) -> None:
        """Stop encoding ahead (the output is being discarded)."""
        if self._thread is not None:
            self._stop = True
            self._thread.join()

    def _frame(self, pos: int, stop: int) -> av.AudioFrame:
        """Samples [pos, stop) of the sound track as one frame (silence past its end); the
        encoder's resampler cuts it into AAC frames in C, no Python loop per 1024 samples."""
        src = self._samples
        block = np.zeros((src.shape[0], stop - pos), dtype=np.float32)
        avail = max(0, min(stop, src.shape[1]) - pos)
        if avail:
            block[:, :avail] = src[:, pos:pos + avail]
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=self._layout)
        frame.sample_rate = self._rate
        frame.pts = pos
        frame.time_base = Fraction(1, self._rate)
        return frame

    def _encode_span(self, target: int) -> None:
        """Encode and mux the sound track up to sample `target`."""
        if target > self._pos:
            self._container.mux(self.stream.encode(self._frame(self._pos, target)))
            self._pos = target

    # ---------------------------------------------------------------- ahead of the video
    def start_ahead(self, total_frames: int) -> None:
        """Encode the whole sound track (to the promised video length) on its own thread.

        Done between video segments, AAC encoding sat on the one thread that muxes them,
        holding back every later segment (CHANGELOG).
        The sound is known up front, so it is encoded at once, in parallel; the muxing thread
        only interleaves finished packets (about 1 % of the decoded audio's size).
        """
        self.stream.codec_context.open()
        self._packets: deque = deque()
        self._error: BaseException | None = None
        self._stop = False
        end = round(total_frames * self._rate / self._fps)
        self._thread = threading.Thread(target=self._run_ahead, args=(end,), name="sonic-aac", daemon=True)
        self._thread.start()

    def _run_ahead(self, end: int) -> None:
        try:
            span = 10 * self._rate
            for pos in range(0, end, span):
                if self._stop:
                    return
                self._packets.extend(self.stream.encode(self._frame(pos, min(end, pos + span))))
            self._pos = end
        except BaseException as e:  # noqa: BLE001 - raised on the muxing thread at close
            self._error = e
