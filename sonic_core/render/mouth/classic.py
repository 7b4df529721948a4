"""The first mouth painter ('classic'): cavity, upper teeth fixed to the skull, lower teeth on the jaw, tongue.

Drawn per frame inside the deformed inner-lip contour, in a mouth frame (u across
from corner to corner, v down, in pixels), with colours taken from the photo:
teeth are the photo's white point tinted by its colour cast, the cavity and tongue
are darkened lip colour. Shading darkens toward the corners and under the upper
lip, tooth gaps are faint darker lines, and the whole interior gets the photo's
grain and softness so it does not look pasted on. Batched over frames.
"""
from __future__ import annotations

import torch

from .. import topology as tp
from ..contour import gaussian_blur, interp_rows, lips_box, pixel_grid, polygon_distance, sorted_knots
from .base import MouthGeometry, MouthSource
from .photo import PhotoMouth, photo_interior, seal_lips
from .style import MouthStyle, estimate_style

# Tooth boundaries across the mouth (fractions of half-width): central incisors widest.
_TOOTH_EDGES = (0.0, 0.26, 0.47, 0.64, 0.78, 0.9)


class ClassicPainter:
    """The first painter, kept as it was (`mouth_painter='classic'`)."""

    def prepare(self, source: MouthSource) -> None:
        rig = source.rig
        self.style = estimate_style(source.crop, source.landmarks, rig.mouth_width, source.upscale)
        self.mouth_width = rig.mouth_width
        self.noise = source.noise
        # The photo's own open mouth is reused exactly where the rig closes parted lips (one decision).
        self.photo = (PhotoMouth.detect(source.image, rig.vertices, rig.mouth_width, min_gap=0.0)
                      if rig.rest_open > 0 else None)
        self._rest_upper = rig.vertices[list(tp.INNER_UPPER)]

    def paint(self, frames: torch.Tensor, offset: tuple[int, int], geometry: MouthGeometry) -> torch.Tensor:
        return composite_mouth(frames, offset, geometry.tgt, geometry.skull(self._rest_upper), self.style,
                               self.mouth_width, self.noise, self.photo)


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
    box = lips_box(tgt, offset, (fw, fh))
    if box is None:
        return frames
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    px, py = pixel_grid(x0, y0, x1, y1, B, dev)

    dist, inside = polygon_distance(px, py, poly)
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
    lu, lv = sorted_knots(*uv(lower))
    tu, tv = sorted_knots(*uv(teeth_upper))
    uu, uvv = sorted_knots(*uv(upper))
    v_low = interp_rows(pu, lu, lv)
    v_up = interp_rows(pu, uu, uvv)
    v_teeth_top = interp_rows(pu, tu, tv)
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
    interior = gaussian_blur(interior, style.softness)
    region = frames[:, :, y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    if photo is not None:
        shift = teeth_upper.mean(1) - photo.upper.mean(0)[None]
        gap_now = (tgt[:, tp.LOWER_LIP_MID] - tgt[:, tp.UPPER_LIP_MID]).norm(dim=-1)
        extra = ((gap_now - photo.gap) / (0.08 * mouth_width)).clamp(0, 1)
        colour, pa = photo_interior(photo, px, py, shift, extra, feather)
        pa = pa.view(B, 1, h, w)
        interior = interior * (1 - pa) + colour.view(B, 3, h, w) * pa
        closing = ((photo.gap - gap_now) / max(photo.gap, 1e-3)).clamp(0, 1)
        seal, wgt = seal_lips(frames, offset, px, py, ey, pv, pu, v_up, v_low, dist, closing, mouth_width, feather)
        region.mul_(1 - wgt.view(B, 1, h, w)).add_(seal.view(B, 3, h, w) * wgt.view(B, 1, h, w))
        # Where closed lips (nearly) touch, the photo's teeth must not show through the seam.
        alpha = torch.where(closing[:, None] > 0, alpha * (gap / (2.0 * feather)).clamp(0, 1), alpha)
    a = alpha.view(B, 1, h, w)
    region.mul_(1 - a).add_(interior * a)
    return frames
