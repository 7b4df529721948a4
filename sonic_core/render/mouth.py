"""Synthesized mouth interior: cavity, upper teeth fixed to the skull, lower teeth on the jaw, tongue.

Drawn per frame inside the deformed inner-lip contour, in a mouth frame (u across
from corner to corner, v down, in pixels), with colours taken from the photo:
teeth are the photo's white point tinted by its colour cast, the cavity and tongue
are darkened lip colour. Shading darkens toward the corners and under the upper
lip, tooth gaps are faint darker lines, and the whole interior gets the photo's
grain and softness so it does not look pasted on. Batched over frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import topology as tp

# Tooth boundaries across the mouth (fractions of half-width): central incisors widest.
_TOOTH_EDGES = (0.0, 0.26, 0.47, 0.64, 0.78, 0.9)


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
    # Grain: high-pass residual on the cheeks; softness: a smoother photo gets a softer interior.
    gray = img @ np.array([0.299, 0.587, 0.114], np.float32)
    cx, cy = p2[50].astype(int)
    r = max(3, int(mouth_width * 0.1))
    patch = gray[max(cy - r, 0):cy + r, max(cx - r, 0):cx + r]
    if patch.shape[0] > 4 and patch.shape[1] > 4:
        hp = patch[1:-1, 1:-1] - 0.25 * (patch[:-2, 1:-1] + patch[2:, 1:-1] + patch[1:-1, :-2] + patch[1:-1, 2:])
        grain = float(np.clip(hp.std() * 0.8, 0.002, 0.05))
    else:
        grain = 0.01
    softness = float(np.clip(max(mouth_width / 150.0, 0.55 * upscale), 0.5, 4.0))
    t = lambda a: torch.as_tensor(np.clip(a, 0, 1), dtype=torch.float32)  # noqa: E731
    return MouthStyle(teeth=t(teeth), cavity=t(cavity), tongue=t(tongue), grain=grain, softness=softness)


def _interp_rows(u: torch.Tensor, ku: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear v(u) per frame: u [B,N], knots ku/kv [B,K] (ku ascending) -> [B,N]."""
    idx = torch.searchsorted(ku.contiguous(), u.contiguous()).clamp(1, ku.shape[1] - 1)
    u0, u1 = ku.gather(1, idx - 1), ku.gather(1, idx)
    v0, v1 = kv.gather(1, idx - 1), kv.gather(1, idx)
    t = ((u - u0) / (u1 - u0).clamp_min(1e-6)).clamp(0, 1)
    return v0 + t * (v1 - v0)


def _sorted_knots(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = u.argsort(dim=1)
    return u.gather(1, order), v.gather(1, order)


def _seg_distance(px: torch.Tensor, py: torch.Tensor, poly: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance to a closed polygon's edges and inside test. px,py [B,N]; poly [B,K,2]."""
    a = poly[:, None]  # [B,1,K,2]
    b = torch.roll(poly, -1, dims=1)[:, None]
    p = torch.stack([px, py], -1)[:, :, None]  # [B,N,1,2]
    ab = b - a
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-9)).clamp(0, 1)
    dist = (p - (a + t[..., None] * ab)).norm(dim=-1).min(dim=-1).values
    ay, by = a[..., 1], b[..., 1]
    cond = (ay > p[..., 1]) != (by > p[..., 1])
    xint = a[..., 0] + (p[..., 1] - ay) * ab[..., 0] / torch.where(ab[..., 1] == 0, torch.full_like(ab[..., 1], 1e-9), ab[..., 1])
    inside = ((cond & (p[..., 0] < xint)).sum(-1) % 2) == 1
    return dist, inside


@dataclass
class PhotoMouth:
    """The photo's own open mouth (a smile showing teeth): reused instead of synthetic teeth."""

    image: torch.Tensor  # [1,3,S,S] source crop 0..1
    upper: torch.Tensor  # [11,2] rest inner upper lip
    lower: torch.Tensor  # [11,2] rest inner lower lip
    gap: float  # rest opening at the centre, pixels

    @staticmethod
    def detect(source: torch.Tensor, vertices: torch.Tensor, mouth_width: float, min_gap: float = 0.05
               ) -> "PhotoMouth | None":
        """A PhotoMouth when the lips in the photo are apart by more than `min_gap` mouth widths."""
        up, lo = vertices[list(tp.INNER_UPPER), :2], vertices[list(tp.INNER_LOWER), :2]
        gap = float((lo[3:8, 1] - up[3:8, 1]).median())
        if gap < min_gap * mouth_width:
            return None
        return PhotoMouth(image=source, upper=up, lower=lo, gap=gap)

    def to(self, device) -> "PhotoMouth":
        return PhotoMouth(self.image.to(device), self.upper.to(device), self.lower.to(device), self.gap)


def _photo_interior(photo: PhotoMouth, px: torch.Tensor, py: torch.Tensor, skull_shift: torch.Tensor,
                    extra_open: torch.Tensor, feather: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour [B,3,N] and alpha [B,N] of the photo's mouth interior carried rigidly with the skull.

    Upper teeth stay fixed to the skull, so the photo's interior moves with the head only.
    As the jaw opens beyond the photo's opening, the lower part of that interior (lower
    teeth, shadow) fades out to make room for the synthesized cavity that follows the jaw.
    """
    B = px.shape[0]
    sx, sy = px - skull_shift[:, 0:1], py - skull_shift[:, 1:2]
    poly = torch.cat([photo.upper, photo.lower.flip(0)[1:-1]], dim=0)[None].expand(B, -1, -1)
    dist, inside = _seg_distance(sx, sy, poly)
    alpha = ((torch.where(inside, dist, -dist) + 0.5 * feather) / feather).clamp(0, 1)
    ux, uy = _sorted_knots(photo.upper[None, :, 0].expand(B, -1), photo.upper[None, :, 1].expand(B, -1))
    lx, ly = _sorted_knots(photo.lower[None, :, 0].expand(B, -1), photo.lower[None, :, 1].expand(B, -1))
    y_up, y_lo = _interp_rows(sx, ux, uy), _interp_rows(sx, lx, ly)
    v_rel = ((sy - y_up) / (y_lo - y_up).clamp_min(1.0)).clamp(0, 1)
    # Above the photo's upper lip line (the lip lifted): more of the same teeth, so sample
    # the photo just under its lip line.
    x_lo, x_hi = photo.upper[:, 0].min(), photo.upper[:, 0].max()
    span = (x_hi - x_lo).clamp_min(1.0)
    across = ((sx - x_lo) / span).clamp(0, 1)
    above = (sy < y_up + 1.5) & (across > 0.08) & (across < 0.92)
    alpha = torch.where(above, torch.ones_like(alpha), alpha)
    sy = torch.where(above, y_up + 1.5, sy)
    fade = ((v_rel - 0.55) / 0.3).clamp(0, 1)
    alpha = alpha * (1 - extra_open[:, None] * fade * fade * (3 - 2 * fade))
    S = photo.image.shape[-1]
    grid = torch.stack([sx, sy], -1)[:, None] * (2.0 / S) - 1.0  # [B,1,N,2]
    colour = F.grid_sample(photo.image.expand(B, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                           align_corners=False)[:, :, 0]
    return colour, alpha


def _seal_lips(frames: torch.Tensor, offset: tuple[int, int], px: torch.Tensor, py: torch.Tensor, ey: torch.Tensor,
               pv: torch.Tensor, pu: torch.Tensor, v_up: torch.Tensor, v_low: torch.Tensor, dist: torch.Tensor,
               closing: torch.Tensor, mouth_width: float, feather: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cover the seam of lips that the rig closed over the photo's own open mouth; returns
    the covered colours [B,3,N] and their weights [B,1,N] for the pixels (px, py).

    FaceMesh's inner lip contour on a smile runs a few pixels inside the teeth, so closed
    lips would keep a broken white line between them. Within a band around the seam (up to
    6 % of the mouth width, growing as the lips close; nothing for frames that do not close),
    each lip's texture is continued from just outside the band toward the seam, moving along
    the mouth's own down axis `ey` [B,2] (so a tilted head works too), and the seam itself
    gets the faint dark line where closed lips meet. Samples come from the whole warped
    window `frames`, far inside it, so a frame looks the same in any batch.
    """
    B, _, fh, fw = frames.shape
    ox, oy = offset
    band = (0.06 * mouth_width * closing)[:, None]  # [B,1] pixels
    within = (1 - dist / band.clamp_min(1e-3)).clamp(0, 1) * (band > 0)  # 1 on the seam, 0 at the band's edge
    above = pv < (v_up + v_low) / 2
    sign = torch.where(above, -1.0, 1.0)
    out = sign * ((band - dist).clamp_min(0) + 1.0)  # pixels along ey: up for the upper lip, down for the lower
    sx = px - ox + out * ey[:, 0:1]
    sy = py - oy + out * ey[:, 1:2]
    grid = torch.stack([sx * (2.0 / fw) - 1.0, sy * (2.0 / fh) - 1.0], -1)[:, None]
    lip = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]
    line = 1 - 0.3 * closing[:, None] * torch.exp(-(dist / max(0.6 * feather, 0.5)) ** 2)
    wgt = within * within * (3 - 2 * within) * (pu.abs() < 1.0)
    return lip * line[:, None], wgt[:, None]


def composite_mouth(frames: torch.Tensor, offset: tuple[int, int], tgt: torch.Tensor, teeth_upper: torch.Tensor,
                    style: MouthStyle, mouth_width: float, noise: torch.Tensor,
                    photo: PhotoMouth | None = None) -> torch.Tensor:
    """Paint the mouth interior, in place, into `frames` [B,3,h,w] (0..1) where the lips are apart.

    `frames` is a window of the full crop whose top-left pixel is `offset` (x, y);
    landmark coordinates are in full-crop pixels.
    `tgt` [B,V,2] deformed vertices; `teeth_upper` [B,11,2] the upper inner lip as it
    would be with the head moving but the lips at rest: the upper teeth hang from it.
    `noise` [S,S] a fixed grain pattern (same every frame: no shimmer). `photo`: the
    photo's own open mouth, shown where it was (moving with the skull) instead of
    synthetic teeth.
    """
    B, _, fh, fw = frames.shape
    ox, oy = offset
    dev = frames.device
    upper = tgt[:, list(tp.INNER_UPPER)]
    lower = tgt[:, list(tp.INNER_LOWER)]
    poly = torch.cat([upper, lower.flip(1)[:, 1:-1]], dim=1)
    # Window: the outer lips' box (covers every frame), so the work is small.
    outer = tgt[:, list(tp.OUTER_UPPER + tp.OUTER_LOWER)]
    lo = outer.amin(dim=(0, 1)).floor() - 2
    hi = outer.amax(dim=(0, 1)).ceil() + 2
    x0, y0 = int(lo[0].clamp(ox, ox + fw - 1)), int(lo[1].clamp(oy, oy + fh - 1))
    x1, y1 = int(hi[0].clamp(ox + 1, ox + fw)), int(hi[1].clamp(oy + 1, oy + fh))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return frames
    ys = torch.arange(y0, y1, device=dev, dtype=torch.float32) + 0.5
    xs = torch.arange(x0, x1, device=dev, dtype=torch.float32) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    h, w = gy.shape
    px, py = gx.reshape(1, -1).expand(B, -1), gy.reshape(1, -1).expand(B, -1)

    dist, inside = _seg_distance(px, py, poly)
    feather = max(0.8, mouth_width / 90.0)
    sd = torch.where(inside, dist, -dist)
    alpha = ((sd + 0.3 * feather) / feather).clamp(0, 1)
    if photo is None and not bool((alpha > 0).any()):  # (lips closed over a photo's mouth need their seam covered)
        return frames

    # Mouth frame: origin between the inner corners, u across (-1..1), v down in pixels.
    cl, cr = tgt[:, tp.INNER_CORNERS[0]], tgt[:, tp.INNER_CORNERS[1]]
    mid = (cl + cr) / 2
    ex = cr - cl
    half = ex.norm(dim=-1, keepdim=True).clamp_min(1.0) / 2
    ex = ex / (2 * half)
    ey = torch.stack([-ex[:, 1], ex[:, 0]], -1)
    if bool((ey[:, 1] < 0).any()):
        ey = torch.where(ey[:, 1:2] < 0, -ey, ey)

    def uv(pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = pts - mid[:, None]
        return (d * ex[:, None]).sum(-1) / half, (d * ey[:, None]).sum(-1)

    pu, pv = uv(torch.stack([px, py], -1))
    lu, lv = _sorted_knots(*uv(lower))
    tu, tv = _sorted_knots(*uv(teeth_upper))
    uu, uvv = _sorted_knots(*uv(upper))
    v_low = _interp_rows(pu, lu, lv)
    v_up = _interp_rows(pu, uu, uvv)
    v_teeth_top = _interp_rows(pu, tu, tv)
    au = pu.abs().clamp(max=1.0)
    gap = (v_low - v_up).clamp_min(0)
    open_amt = (gap / (0.3 * mouth_width)).clamp(0, 1)
    soft = max(0.6, mouth_width / 160.0)

    # Upper teeth hang from the skull; each incisal edge is slightly rounded so the row
    # is not a ruler-straight band. The arch curves up and recedes toward the corners.
    tooth_idx = torch.bucketize(au, torch.tensor(_TOOTH_EDGES[1:], device=dev))
    edges = torch.tensor(_TOOTH_EDGES + (1.0,), device=dev)
    t0, t1 = edges[tooth_idx], edges[tooth_idx + 1]
    within = ((au - t0) / (t1 - t0).clamp_min(1e-3)).clamp(0, 1)
    rounding = 0.018 * mouth_width * (2 * within - 1) ** 4
    tooth_len = 0.15 * mouth_width * (1 - 0.5 * au ** 2) - rounding
    v_upper_edge = v_teeth_top + tooth_len
    upper_teeth = ((v_upper_edge - pv) / soft).clamp(0, 1) * (1 - ((au - 0.85) / 0.12).clamp(0, 1))
    # Lower incisors ride on the jaw, mostly hidden behind the lower lip: a low sliver, centre only.
    v_lower_edge = v_low - 0.05 * mouth_width * (1 - au / 0.55).clamp(0, 1)
    lower_teeth = ((pv - v_lower_edge) / soft).clamp(0, 1) * (1 - (au / 0.5).clamp(0, 1) ** 2) * open_amt
    lower_teeth = lower_teeth * (1 - upper_teeth)

    # Cavity: dark, darkest deep inside and toward the corners.
    depth = ((pv - v_up) * (v_low - pv)).clamp_min(0) / (0.25 * gap ** 2).clamp_min(1.0)
    cav_shade = (1.0 - 0.6 * depth.clamp(0, 1)) * (1 - 0.4 * au ** 2)
    cavity = style.cavity.to(dev).view(1, 3, 1) * cav_shade[:, None]
    # Tongue: a low dome behind the lower teeth, lit on top, only when the mouth is open.
    tongue_c = v_low - 0.07 * mouth_width
    tongue_r = ((pu / 0.62) ** 2 + ((pv - tongue_c) / (0.11 * mouth_width)) ** 2).sqrt()
    tongue_a = ((1 - tongue_r) / 0.2).clamp(0, 1) * ((open_amt - 0.25) / 0.5).clamp(0, 1)
    tongue_light = (0.45 + 0.4 * (1 - tongue_r).clamp(0, 1)) * (1 - 0.5 * au ** 2)
    tongue_col = style.tongue.to(dev).view(1, 3, 1) * tongue_light[:, None]
    interior = cavity * (1 - tongue_a[:, None]) + tongue_col * tongue_a[:, None]

    # Teeth light: shadowed under the upper lip, falling off toward the corners, dimmer when
    # the mouth is barely open; faint gaps between teeth.
    gaps = torch.zeros_like(pu)
    for e in _TOOTH_EDGES:
        width_u = 0.01 + 0.012 * e
        gaps = torch.maximum(gaps, (1 - ((au - e).abs() / width_u)).clamp(0, 1))
    lip_shadow = 0.7 + 0.3 * ((pv - v_up) / (0.08 * mouth_width)).clamp(0, 1)
    side_shade = 1 - 0.75 * au ** 1.6
    light = (0.82 + 0.15 * open_amt) * side_shade * (1 - 0.3 * gaps)
    teeth_col = style.teeth.to(dev).view(1, 3, 1)
    up_col = teeth_col * (light * lip_shadow)[:, None]
    low_col = teeth_col * (light * 0.6)[:, None]
    interior = interior * (1 - upper_teeth[:, None]) + up_col * upper_teeth[:, None]
    interior = interior * (1 - lower_teeth[:, None]) + low_col * lower_teeth[:, None]
    # The lips' wet inner edge: a darker rim just inside the opening.
    rim = (1 - (dist / (feather + 0.015 * mouth_width)).clamp(0, 1)) * inside.float()
    interior = interior * (1 - 0.35 * (0.3 + 0.7 * open_amt) * rim)[:, None]

    grain = noise[y0:y1, x0:x1].reshape(1, 1, -1) * style.grain
    interior = (interior + grain).clamp(0, 1).view(B, 3, h, w)
    k = int(max(1, round(style.softness * 1.5)))
    if style.softness > 0.4:
        xk = torch.arange(-k, k + 1, device=dev, dtype=torch.float32)
        g = torch.exp(-0.5 * (xk / style.softness) ** 2)
        g = g / g.sum()
        interior = F.conv2d(F.pad(interior, (k, k, 0, 0), mode="replicate"), g.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        interior = F.conv2d(F.pad(interior, (0, 0, k, k), mode="replicate"), g.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    region = frames[:, :, y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    if photo is not None:
        shift = teeth_upper.mean(1) - photo.upper.mean(0)[None]
        gap_now = (tgt[:, tp.LOWER_LIP_MID] - tgt[:, tp.UPPER_LIP_MID]).norm(dim=-1)
        extra = ((gap_now - photo.gap) / (0.08 * mouth_width)).clamp(0, 1)
        colour, pa = _photo_interior(photo, px, py, shift, extra, feather)
        pa = pa.view(B, 1, h, w)
        interior = interior * (1 - pa) + colour.view(B, 3, h, w) * pa
        closing = ((photo.gap - gap_now) / max(photo.gap, 1e-3)).clamp(0, 1)
        seal, wgt = _seal_lips(frames, offset, px, py, ey, pv, pu, v_up, v_low, dist, closing, mouth_width, feather)
        region.mul_(1 - wgt.view(B, 1, h, w)).add_(seal.view(B, 3, h, w) * wgt.view(B, 1, h, w))
        # Where closed lips (nearly) touch, the photo's teeth must not show through the seam.
        alpha = torch.where(closing[:, None] > 0, alpha * (gap / (2.0 * feather)).clamp(0, 1), alpha)
    a = alpha.view(B, 1, h, w)
    region.mul_(1 - a).add_(interior * a)
    return frames
