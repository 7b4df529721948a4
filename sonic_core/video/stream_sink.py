"""Video sinks: where an `Mp4Writer`'s frames become muxed packets, one class per way of encoding.

A sink is chosen once, when the writer is made, and has this small interface:

* ``put(kind, rows)``: encode (or start encoding) a chunk, ``"yuv"`` packed I420
  [B, H*W*3/2] or ``"rgb"`` [B, H, W, 3] uint8, on the thread that calls it;
* ``finish()``: all frames are encoded and muxed; ``discard()``: stop, nothing more is muxed;
* ``frames_encoded``: frames whose packets are muxed (or in the encoder), for the sound track;
* ``holds_rows``: whether rows are still referenced after ``put`` returns (then the writer
  copies CPU frames that are the caller's memory);
* ``audio_ahead``: whether the sound track should be encoded on its own thread when the
  video's length is known.

Each sink calls ``follow(frames_encoded, final)`` (`AudioTrack.follow`, or a no-op) whenever
the video advanced, so the muxer gets sound up to the same time.

This module: `StreamSink`, one encoder stream in the MP4 (libx264, NVENC, any codec). The
parallel x264 one is `segment_sink.SegmentSink`. Either may be fed from a background thread
by `encode_ahead.EncodeAhead`.
"""
from __future__ import annotations

from av.video.reformatter import VideoReformatter

from ..workers.x264_segment import video_frame


def no_sound(frames_encoded: int, final: bool = False) -> None:
    """`follow` for a video without a sound track."""


class StreamSink:
    """Every frame through the MP4 stream's own encoder, in order, on the calling thread."""

    holds_rows = False  # each chunk is encoded before put() returns
    audio_ahead = False  # AAC between chunks costs the renderer little; encode_ahead may still ask for it

    def __init__(self, container, stream, follow=no_sound):
        self._container, self._stream, self._follow = container, stream, follow
        self._width, self._height = stream.width, stream.height
        self._sws = VideoReformatter()  # cached swscale context for CPU frames
        self.frames_encoded = 0

    def put(self, kind: str, rows) -> None:
        st, mux = self._stream, self._container.mux
        for row in rows:
            frame = video_frame(kind, row, self._width, self._height, self._sws)
            frame.pts = self.frames_encoded
            frame.time_base = st.codec_context.time_base
            mux(st.encode(frame))
            self.frames_encoded += 1
        self._follow(self.frames_encoded, False)

    def finish(self) -> None:
        self._follow(self.frames_encoded, True)  # the sound's end first, then the encoder's delayed frames
        self._container.mux(self._stream.encode(None))

    def discard(self) -> None:
        pass
