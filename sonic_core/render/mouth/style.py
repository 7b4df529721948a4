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
    gray = (crop.astype(np.float32) / 255.0) @ np.array([0.299, 0.587, 0.114], np.float32)
    cx, cy = landmarks[50, :2].astype(int)
    r = max(3, int(mouth_width * 0.1))
    patch = gray[max(cy - r, 0):cy + r, max(cx - r, 0):cx + r]
    if patch.shape[0] > 4 and patch.shape[1] > 4:
        hp = patch[1:-1, 1:-1] - 0.25 * (patch[:-2, 1:-1] + patch[2:, 1:-1] + patch[1:-1, :-2] + patch[1:-1, 2:])
        return float(np.clip(hp.std() * 0.8, 0.002, 0.05))
    return 0.01


def estimate_blur(crop: np.ndarray, landmarks: np.ndarray, mouth_width: float) -> float:
    """Blur of the photo's edges in crop pixels (Gaussian sigma), measured on the face.

    A blurred step edge of contrast C has a steepest gradient of C / (sqrt(2 pi) sigma): at the
    face's strongest edges (eyes, brows, lips, nostrils) sigma = C / (2.5 x gradient). This
    folds in the photo's own softness (focus, JPEG, its resolution) and the crop's enlargement,
    so an interior painted with it is exactly as soft as the face around it.
    """
    p2 = landmarks[:, :2]
    x0, y0 = np.clip(np.floor(p2.min(0)).astype(int), 0, None)
    x1, y1 = np.ceil(p2.max(0)).astype(int) + 1
    face = crop[y0:y1, x0:x1].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if face.shape[0] < 16 or face.shape[1] < 16:
        return 1.0
    # Measured on at most ~384 px across (a blur is then at least ~half a pixel of it).
    k = int(max(1, face.shape[1] // 384))
    if k > 1:
        h, w = face.shape[0] // k * k, face.shape[1] // k * k
        face = face[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))
        mouth_width = mouth_width / k
    gy, gx = np.gradient(face)
    grad = np.hypot(gx, gy)
    r = max(2, int(round(0.02 * mouth_width)) + 2)
    from scipy.ndimage import maximum_filter, minimum_filter

    contrast = maximum_filter(face, size=2 * r + 1) - minimum_filter(face, size=2 * r + 1)
    strong = grad >= np.percentile(grad, 99)
    ok = strong & (contrast > 20.0)
    if ok.sum() < 10:
        return 1.0
    sigma = contrast[ok] / (2.5 * grad[ok])
    return float(np.clip(np.median(sigma) * k, 0.4, 6.0))


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


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB colours [..., 3] in 0..1."""
    c = np.clip(np.asarray(rgb, np.float64), 0.0, 1.0)
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = c @ _RGB2XYZ.T / _WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lightness(rgb: np.ndarray) -> np.ndarray:
    """CIELAB L* of sRGB colours [..., 3] in 0..1 (from luminance alone: cheaper than srgb_to_lab)."""
    c = np.clip(np.asarray(rgb, np.float32), 0.0, 1.0)
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    y = c @ _RGB2XYZ[1].astype(np.float32)
    return 116 * np.where(y > 0.008856, np.cbrt(y), 7.787 * y + 16.0 / 116.0) - 16


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """sRGB 0..1 (clipped) of CIELAB colours [..., 3]."""
    lab = np.asarray(lab, np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = np.where(f > 0.206893, f ** 3, (f - 16.0 / 116.0) / 7.787) * _WHITE
    c = np.clip(xyz @ np.linalg.inv(_RGB2XYZ).T, 0.0, 1.0)
    return np.clip(np.where(c > 0.0031308, 1.055 * c ** (1 / 2.4) - 0.055, 12.92 * c), 0.0, 1.0)


def in_gamut(lab: np.ndarray) -> np.ndarray:
    """The colour [3] with its chroma reduced (same lightness and hue) until sRGB can show it."""
    lo, hi = 0.0, 1.0
    if _displayable(lab):
        return lab
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _displayable(np.array([lab[0], lab[1] * mid, lab[2] * mid])) else (lo, mid)
    return np.array([lab[0], lab[1] * lo, lab[2] * lo])


def _displayable(lab: np.ndarray) -> bool:
    fy = (lab[0] + 16) / 116
    f = np.array([fy + lab[1] / 500, fy, fy - lab[2] / 200])
    lin = (np.where(f > 0.206893, f ** 3, (f - 16.0 / 116.0) / 7.787) * _WHITE) @ np.linalg.inv(_RGB2XYZ).T
    return bool(np.all(lin >= -1e-6) and np.all(lin <= 1 + 1e-6))


_RGB2XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
_WHITE = np.array([0.95047, 1.0, 1.08883])


@dataclass
class MouthPalette:
    """Colours of a mouth interior that belongs to this photo (sRGB 0..1), and its grain and softness."""

    teeth: torch.Tensor  # [3] lit enamel
    cavity: torch.Tensor  # [3] the oral cavity near the opening (lightest)
    deep: torch.Tensor  # [3] the back of the cavity
    tongue: torch.Tensor  # [3]
    gum: torch.Tensor  # [3]
    skin: np.ndarray  # [3] the cheeks, as measured (what the rest is relative to)
    grain: float  # std of the photo's pixel noise, 0..1 units
    softness: float  # blur sigma in pixels matching the photo's sharpness


def estimate_palette(crop: np.ndarray, landmarks: np.ndarray, mouth_width: float) -> MouthPalette:
    """Interior colours from the photo's own cheeks, lips, white balance and exposure.

    Worked out in CIELAB against the cheeks, as real mouths measure (benchmarks/mouth_realism.py
    on real talking-face video): teeth are off-white with a tint a little greener and bluer
    than the cheeks (a* 4-12 and b* 1-8 below them: the mouth's shade and the lips' red light),
    the cavity is dark and warm (a* near the cheeks'), the tongue is a dim lip red. Teeth are lit
    like the scene, not like the skin: on dark skin the skin's highlights would make them grey,
    so the photo's bright level sets their lightness. A black-and-white or faded photo gets
    colours just as faded.
    """
    img = crop.astype(np.float32) / 255.0
    p2 = landmarks[:, :2]
    lips = _region_mean(img, p2[list(tp.OUTER_LOWER[2:-2])] * 0.6 + p2[list(tp.INNER_LOWER[2:-2])] * 0.4, mouth_width * 0.03)
    cheeks = _region_mean(img, p2[[50, 280, 205, 425]], mouth_width * 0.08)
    h, w = img.shape[:2]
    pts = p2.astype(int)
    ok = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
    face = img[pts[ok, 1], pts[ok, 0]]
    skin_lab, lip_lab = srgb_to_lab(cheeks), srgb_to_lab(lips)
    face_l = lightness(face) if len(face) else np.array([skin_lab[0]])
    step = max(1, img.shape[0] // 128)
    scene_l = lightness(img[::step, ::step].reshape(-1, 3))
    # Lightness of lit enamel: near the face's own highlights, never below the scene's bright level.
    white_l = float(np.clip(max(np.percentile(face_l, 97) + 4.0, 0.9 * np.percentile(scene_l, 99)), 40.0, 92.0))
    chroma = float(np.hypot(skin_lab[1], skin_lab[2]))
    keep = float(np.clip(chroma / 18.0, 0.0, 1.0))  # typical skin has C* 18-35; a grey photo has ~0
    teeth = np.array([0.9 * white_l, np.clip(skin_lab[1] - 5.0, -2.0, 24.0), np.clip(skin_lab[2] - 3.0, 4.0, 32.0)])
    cavity = np.array([0.36 * skin_lab[0], skin_lab[1] * 0.9 + 4.0, skin_lab[2] * 0.5])
    deep = np.array([0.09 * skin_lab[0], skin_lab[1] * 0.5 + 2.0, skin_lab[2] * 0.25])
    tongue = np.array([0.85 * lip_lab[0], lip_lab[1] * 0.95 + 4.0, lip_lab[2] * 0.55])
    gum = np.array([0.8 * lip_lab[0], lip_lab[1] + 6.0, lip_lab[2] * 0.7])
    grain = estimate_grain(crop, landmarks, mouth_width)
    softness = estimate_blur(crop, landmarks, mouth_width)

    def rgb(lab: np.ndarray) -> torch.Tensor:
        lab = lab.copy()
        lab[1:] *= keep
        return torch.as_tensor(lab_to_srgb(in_gamut(lab)), dtype=torch.float32)

    return MouthPalette(teeth=rgb(teeth), cavity=rgb(cavity), deep=rgb(deep), tongue=rgb(tongue), gum=rgb(gum),
                        skin=np.asarray(cheeks, np.float64), grain=grain, softness=softness)
