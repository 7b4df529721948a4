"""Colours, grain and softness of the photo, measured once per clip for a painted mouth interior."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import topology as tp


@dataclass
class MouthStyle:
    teeth: torch.Tensor  # [3] linear-ish RGB 0..1
    cavity: torch.Tensor  # [3]
    tongue: torch.Tensor  # [3]
    grain: float  # std of the photo's pixel noise, 0..1 units
    softness: float  # blur sigma in pixels matching the photo's sharpness


def _region_mean(img: np.ndarray, pts: np.ndarray, radius: float) -> np.ndarray:
    h, w = img.shape[:2]
    vals = []
    r = max(1, int(radius))
    for x, y in pts:
        x0, x1 = int(max(x - r, 0)), int(min(x + r + 1, w))
        y0, y1 = int(max(y - r, 0)), int(min(y + r + 1, h))
        if x1 > x0 and y1 > y0:
            vals.append(img[y0:y1, x0:x1].reshape(-1, 3))
    return np.concatenate(vals).mean(0) if vals else np.full(3, 0.5)


def estimate_grain(crop: np.ndarray, landmarks: np.ndarray, mouth_width: float) -> float:
    """Std of the photo's pixel noise (0..1 units): the high-pass residual on a cheek."""
    gray = crop.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0
    cx, cy = landmarks[50, :2].astype(int)
    r = max(3, int(mouth_width * 0.1))
    patch = gray[max(cy - r, 0):cy + r, max(cx - r, 0):cx + r]
    if patch.shape[0] > 4 and patch.shape[1] > 4:
        hp = patch[1:-1, 1:-1] - 0.25 * (patch[:-2, 1:-1] + patch[2:, 1:-1] + patch[1:-1, :-2] + patch[1:-1, 2:])
        return float(np.clip(hp.std() * 0.8, 0.002, 0.05))
    return 0.01


def estimate_style(crop: np.ndarray, landmarks: np.ndarray, mouth_width: float, upscale: float = 1.0) -> MouthStyle:
    """Colours, grain and softness of the photo, measured around the face.

    `upscale` is how much the crop was enlarged from the photo's pixels: an enlarged photo
    is soft, and the synthesized interior must be as soft or it looks pasted on.
    """
    img = crop.astype(np.float32) / 255.0
    p2 = landmarks[:, :2]
    lip = _region_mean(img, p2[list(tp.OUTER_LOWER[2:-2])] * 0.6 + p2[list(tp.INNER_LOWER[2:-2])] * 0.4, mouth_width * 0.03)
    cheeks = _region_mean(img, p2[[50, 280, 101, 330]], mouth_width * 0.08)
    face_pts = p2.astype(int)
    h, w = img.shape[:2]
    inside = (face_pts[:, 0] >= 0) & (face_pts[:, 0] < w) & (face_pts[:, 1] >= 0) & (face_pts[:, 1] < h)
    face_vals = img[face_pts[inside, 1], face_pts[inside, 0]]
    lum = face_vals @ np.array([0.299, 0.587, 0.114], np.float32)
    # Teeth are lit like the rest of the scene, not like the skin: on a dark-skinned face the
    # skin's highlights underestimate them, so the photo's own bright level is a floor.
    scene = img[::4, ::4] @ np.array([0.299, 0.587, 0.114], np.float32)
    white = float(np.clip(max(np.percentile(lum, 97) * 1.05, 0.8 * np.percentile(scene, 99)), 0.35, 0.95))
    cast = cheeks / max(float(cheeks.mean()), 1e-3)
    teeth = white * (0.8 + 0.2 * cast) * np.array([1.0, 0.93, 0.8], np.float32)
    cavity = lip * 0.22 + np.array([0.02, 0.0, 0.0], np.float32)
    tongue = lip * 0.55 + np.array([0.08, 0.0, 0.0], np.float32)
    # Match the photo's colourfulness: a black-and-white or faded photo gets grey teeth and
    # tongue, not warm ones. Typical skin has a chroma (max-min of RGB) around 0.15.
    chroma = float(np.median(face_vals.max(axis=1) - face_vals.min(axis=1))) if len(face_vals) else 0.15
    keep = float(np.clip(chroma / 0.15, 0.0, 1.0))
    teeth, cavity, tongue = (c.mean() + keep * (c - c.mean()) for c in (teeth, cavity, tongue))
    grain = estimate_grain(crop, landmarks, mouth_width)
    # Softness: a smoother photo gets a softer interior.
    softness = float(np.clip(max(mouth_width / 150.0, 0.55 * upscale), 0.5, 4.0))
    t = lambda a: torch.as_tensor(np.clip(a, 0, 1), dtype=torch.float32)  # noqa: E731
    return MouthStyle(teeth=t(teeth), cavity=t(cavity), tongue=t(tongue), grain=grain, softness=softness)
