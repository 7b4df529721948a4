"""Measuring rendered videos with the face stage: the same checks the tests and benchmarks use.

Mouth opening is measured the way an independent viewer would: re-run FaceMesh on the
rendered frames and take the inner-lip gap (points 13-14) over the inter-ocular distance
(outer eye corners 33-263), so the number does not depend on resolution.
"""
from __future__ import annotations

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
