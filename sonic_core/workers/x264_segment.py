"""One closed-GOP H.264 segment from raw frames: in a thread, or in a warm worker process.

`video.writer` encodes a long video as consecutive segments with parallel x264 instances
(see its docstring). Run as a script (`--serve IDLE_S`, see `_serve.py`), this file encodes
segments sent by the writer, importing only PyAV and numpy, so x264's many short returns to
Python (per frame) never compete with the renderer for the engine's GIL.

Request: 4-byte header length + JSON header + the frames' bytes, back to back.
Reply:   4-byte header length + JSON header (packet sizes, timestamps, key flags) +
         the stream's extradata (SPS/PPS) + the packets' bytes.
"""
from __future__ import annotations

import json
import struct
import sys
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

if __package__:
    from . import _serve
else:  # run by path: this folder is sys.path[0]
    import _serve

_LEN = struct.Struct("<I")


def tag_bt709(cc) -> None:
    """BT.709 primaries/transfer/matrix, limited range: what colour.py and swscale produce."""
    cc.colorspace = 1  # AVCOL_SPC_BT709
    cc.color_primaries = 1  # AVCOL_PRI_BT709
    cc.color_trc = 1  # AVCOL_TRC_BT709
    cc.color_range = 1  # AVCOL_RANGE_MPEG (limited)


def video_frame(kind: str, row: np.ndarray, width: int, height: int, sws: VideoReformatter) -> av.VideoFrame:
    """A yuv420p frame from packed I420 ("yuv", [H*W*3/2]) or RGB ("rgb", [H, W, 3]) uint8;
    RGB is converted by libswscale with BT.709 limited range and 2x2 area chroma."""
    if kind == "yuv":
        frame = av.VideoFrame.from_ndarray(row.reshape(height * 3 // 2, width), format="yuv420p")
    else:
        frame = sws.reformat(av.VideoFrame.from_ndarray(row, format="rgb24"), format="yuv420p",
                             dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG,
                             interpolation=Interpolation.AREA)
    frame.colorspace = 1
    frame.color_range = 1
    return frame


def encode_segment(spec: dict, rows) -> tuple[list[av.Packet], bytes | None]:
    """Encode `rows`, (kind, frame) pairs, with a fresh encoder opened from `spec`: codec,
    width, height, fps [num, den], threads, options. Frame i has pts i; every instance opened
    with the same spec writes the same stream header, so segments can be joined."""
    w, h = int(spec["width"]), int(spec["height"])
    fps = Fraction(*spec["fps"])
    sws = VideoReformatter()
    cc = av.CodecContext.create(spec["codec"], "w")
    cc.width, cc.height, cc.pix_fmt = w, h, "yuv420p"
    cc.time_base = 1 / fps
    cc.framerate = fps
    cc.thread_count = int(spec["threads"])
    cc.flags |= av.codec.context.Flags.global_header
    tag_bt709(cc)
    cc.options = dict(spec["options"])
    cc.open()
    packets = []
    for i, (kind, row) in enumerate(rows):
        frame = video_frame(kind, row, w, h, sws)
        frame.pts = i
        frame.time_base = cc.time_base
        packets += cc.encode(frame)
    packets += cc.encode(None)
    return packets, cc.extradata


def frame_shape(spec: dict) -> tuple[int, ...]:
    w, h = int(spec["width"]), int(spec["height"])
    return (h * w * 3 // 2,) if spec["kind"] == "yuv" else (h, w, 3)


def pack_request(spec: dict) -> bytes:
    head = json.dumps(spec).encode()
    return _LEN.pack(len(head)) + head


def _handle(stream, nbytes: int, _prepared=None) -> bytes:
    """Encode frames as they arrive through one reused buffer (from_ndarray copies each into
    its frame), so a child holds one frame of the request, not the whole segment."""
    size = bytearray(_LEN.size)
    _serve.read_into(stream, size)
    raw = bytearray(_LEN.unpack(size)[0])
    _serve.read_into(stream, raw)
    spec = json.loads(raw)
    buf = np.empty(frame_shape(spec), np.uint8)
    count, rest = divmod(nbytes - len(size) - len(raw), buf.nbytes)
    if rest:
        raise ValueError(f"request of {nbytes} bytes is not a whole number of frames")

    def rows():
        for _ in range(count):
            _serve.read_into(stream, buf)
            yield spec["kind"], buf

    packets, extradata = encode_segment(spec, rows())
    extradata = extradata or b""
    head = json.dumps({"extradata": len(extradata),
                       "packets": [[p.size, p.pts, p.dts, bool(p.is_keyframe)] for p in packets]}).encode()
    return b"".join([_LEN.pack(len(head)), head, extradata] + [bytes(p) for p in packets])


def unpack_reply(reply: bytes) -> tuple[list[av.Packet], bytes | None]:
    n = _LEN.unpack_from(reply)[0]
    head = json.loads(reply[_LEN.size:_LEN.size + n])
    pos = _LEN.size + n
    extradata = reply[pos:pos + head["extradata"]] or None
    pos += head["extradata"]
    view = memoryview(reply)
    packets = []
    for size, pts, dts, key in head["packets"]:
        p = av.Packet(view[pos:pos + size])
        p.pts, p.dts, p.is_keyframe = pts, dts, key
        packets.append(p)
        pos += size
    return packets, extradata


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        sys.exit(_serve.serve(_handle, float(sys.argv[2])))
    sys.exit("usage: x264_segment.py --serve IDLE_S")
