"""Measuring rendered videos (for tests and benchmarks; not part of the engine): decoded frames,
FaceMesh re-run on them, and the container's facts.

Mouth opening is measured the way an independent viewer would: re-run FaceMesh on the
rendered frames and take the inner-lip gap (points 13-14) over the inter-ocular distance
(outer eye corners 33-263), so the number does not depend on resolution.
"""
from __future__ import annotations

import os

import av
import numpy as np
import torch

UPPER_INNER_MID, LOWER_INNER_MID = 13, 14
EYE_OUTER = (33, 263)


def read_video_frames(path, max_frames: int | None = None) -> np.ndarray:
    """All (or the first `max_frames`) frames of a video as [N,H,W,3] uint8 RGB."""
    import av

    out = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(out) >= max_frames:
                break
    return np.stack(out)


def landmarks_of_frames(frames: np.ndarray | torch.Tensor, analyzer, reference_landmarks: np.ndarray,
                        chunk: int = 32) -> np.ndarray:
    """FaceMesh landmarks [N,468,3] of rendered frames; the ROI comes from `reference_landmarks`."""
    frames_t = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    out = analyzer.landmarks_batch(frames_t, np.asarray(reference_landmarks), refine=True, chunk=chunk)
    return out.cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)


def lip_gap(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip opening per frame, in inter-ocular distances ([N,468,2+] -> [N])."""
    lm = np.asarray(landmarks)[..., :2]
    iod = np.linalg.norm(lm[..., EYE_OUTER[0], :] - lm[..., EYE_OUTER[1], :], axis=-1)
    gap = np.linalg.norm(lm[..., UPPER_INNER_MID, :] - lm[..., LOWER_INNER_MID, :], axis=-1)
    return gap / np.maximum(iod, 1e-6)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB between uint8 images (optionally only where `mask` is True)."""
    d = a.astype(np.float64) - b.astype(np.float64)
    if mask is not None:
        d = d[..., mask, :] if d.ndim == 4 else d[mask]
    mse = float(np.mean(d ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of the luma of two uint8 RGB images (Gaussian window, sigma 1.5; Wang et al. 2004)."""
    from scipy.ndimage import gaussian_filter

    def luma(x):
        return x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])

    x, y = luma(a), luma(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = gaussian_filter(x, 1.5), gaussian_filter(y, 1.5)
    vx = gaussian_filter(x * x, 1.5) - mx * mx
    vy = gaussian_filter(y * y, 1.5) - my * my
    cxy = gaussian_filter(x * y, 1.5) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def _mp4_faststart(path) -> bool:
    """True when the 'moov' index precedes 'mdat' (top-level atoms)."""
    with open(path, "rb") as f:
        while True:
            head = f.read(8)
            if len(head) < 8:
                return False
            size = int.from_bytes(head[:4], "big")
            kind = head[4:8]
            if size == 1:
                size = int.from_bytes(f.read(8), "big")
                f.seek(size - 16, 1)
            else:
                if size < 8:
                    return False
                f.seek(size - 8, 1)
            if kind == b"moov":
                return True
            if kind == b"mdat":
                return False


def probe_mp4(path) -> dict:
    """Measure an MP4: durations, frame count, rate, size, codecs, colour tags (for tests/QA).

    audio_duration is the audio track's length from the container (edit list applied: AAC
    encoder priming and last-frame padding excluded), i.e. what a player's timeline shows;
    audio_decoded_duration is what FFmpeg's decoder outputs (priming removed, but the
    last AAC frame comes out whole, so up to 1023 samples longer).
    """
    path = os.fspath(path)
    info = dict(duration=None, video_frames=0, fps=None, width=None, height=None, audio_duration=None,
                audio_rate=None, audio_channels=None, video_codec=None, audio_codec=None,
                video_duration=None, audio_decoded_duration=None, colorspace=None, color_range=None, faststart=_mp4_faststart(path))
    with av.open(path) as c:
        if c.duration is not None:
            info["duration"] = c.duration / 1e6
        streams = []
        v = c.streams.video[0] if c.streams.video else None
        a = c.streams.audio[0] if c.streams.audio else None
        if v is not None:
            streams.append(v)
            cc = v.codec_context
            info.update(fps=float(v.average_rate) if v.average_rate else None, width=cc.width, height=cc.height,
                        video_codec=cc.name, colorspace=int(cc.colorspace), color_range=int(cc.color_range))
            if v.duration is not None:
                info["video_duration"] = float(v.duration * v.time_base)
        samples = 0
        if a is not None:
            streams.append(a)
            info.update(audio_rate=a.codec_context.sample_rate, audio_codec=a.codec_context.name,
                        audio_channels=a.codec_context.channels)
            if a.duration is not None:
                info["audio_duration"] = float(a.duration * a.time_base)
        for packet in c.demux(*streams):
            if packet.size == 0:
                continue
            if v is not None and packet.stream.index == v.index:
                info["video_frames"] += 1
            elif a is not None and packet.stream.index == a.index:
                for fr in packet.decode():
                    samples += fr.samples
        if a is not None:
            for fr in a.codec_context.decode(None):
                samples += fr.samples
            info["audio_decoded_duration"] = samples / float(info["audio_rate"])
            if info["audio_duration"] is None:
                info["audio_duration"] = info["audio_decoded_duration"]
    return info
