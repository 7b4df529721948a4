"""Which H.264 encoder a video gets, with what settings, at what frame rate.

Everything here is decided before the first frame: `choose_encoder` picks NVENC when the card
has it, else libx264 with `auto_workers` parallel instances; `codec_options` turns crf/preset
into each encoder's own options; `auto_segment_frames` sizes the parallel segments;
`warm_encoders` starts the x264 helper processes early; `as_fraction` makes fps an exact
rational (frame i has pts i in a 1/fps time base).
"""
from __future__ import annotations

import functools
import os
from fractions import Fraction

import av
import numpy as np

from ..config import ENCODERS
from ..errors import SonicInputError
from ..system import usable_cpus
from ..workers import x264_segment
from ..workers.pool import warm_pool

# The x264 helper script the warm worker processes run (see workers/x264_segment.py).
X264_SCRIPT = os.path.abspath(x264_segment.__file__)

_NTSC_BASES = (24, 30, 48, 60, 120)

# preset "auto" for x264: superfast's search (diamond motion search, subpel refinement 1, intra
# partitions only) but with the macroblock-tree rate control and 10-frame lookahead that
# superfast turns off. On rendered talking heads at 1024² (two faces, crf 18, one thread) this
# encodes 1.65-1.75x faster than veryfast, for 6-15 % larger files at PSNR-Y within 0.2 dB;
# plain superfast is 1.4x faster but 2.4-2.7x larger (without mbtree, crf spends bits on
# static background). Measured with benchmarks/bench.py's encoder sweep.
AUTO_X264 = {"preset": "superfast", "x264-params": "mbtree=1:rc-lookahead=10"}


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


def codec_options(codec: str, crf: int, preset: str) -> dict:
    """FFmpeg options for `codec` from the writer's crf and preset ("auto": `AUTO_X264` for
    x264, superfast for x265, p4 for NVENC). Every parallel segment is opened with these too,
    so they must be a pure function of the arguments."""
    if "nvenc" in codec:
        p = preset if preset.startswith("p") else "p4"
        return {"rc": "vbr", "cq": str(int(crf)), "preset": p}
    if codec == "libx264" and preset == "auto":
        return {"crf": str(int(crf)), **AUTO_X264}
    if codec in ("libx264", "libx265"):
        return {"crf": str(int(crf)), "preset": "superfast" if preset == "auto" else str(preset)}
    return {}


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


@functools.cache
def nvenc_available() -> bool:
    """True when FFmpeg's NVENC H.264 encoder opens here (an NVIDIA card with NVENC + driver;
    datacentre H100/H200 have none). Probed once per process with a tiny frame."""
    try:
        cc = av.CodecContext.create("h264_nvenc", "w")
        cc.width, cc.height, cc.pix_fmt, cc.time_base = 256, 256, "yuv420p", Fraction(1, 25)
        cc.open()
        return True
    except Exception:  # noqa: BLE001 - codec missing from this PyAV build, no driver, no NVENC unit
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
        warm_pool(X264_SCRIPT, keep=n).warm(n)


def auto_workers(width: int, height: int, cpus: int | None = None) -> int:
    """Parallel x264 instances worth running: one x264 (frame-threaded) keeps up to ~4 cores
    busy; beyond that, segments add throughput. Small frames encode fast enough alone."""
    cpus = cpus or usable_cpus()
    if cpus < 6 or width * height < 384 * 384:
        return 1
    return int(min(8, cpus // 2))
