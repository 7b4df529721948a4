"""The photo's own open mouth (a smile showing teeth), and lips closed over it.

Used by every painter: where the photo shows its teeth, they are shown again (moving
with the skull), and where the rig closes such lips, the seam between them is covered
with each lip's own texture.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import topology as tp
from ..contour import interp_rows, polygon_distance, sorted_knots


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


def photo_interior(photo: PhotoMouth, px: torch.Tensor, py: torch.Tensor, skull_shift: torch.Tensor,
                    extra_open: torch.Tensor, feather: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour [B,3,N] and alpha [B,N] of the photo's mouth interior carried rigidly with the skull.

    Upper teeth stay fixed to the skull, so the photo's interior moves with the head only.
    As the jaw opens beyond the photo's opening, the lower part of that interior (lower
    teeth, shadow) fades out to make room for the synthesized cavity that follows the jaw.
    """
    B = px.shape[0]
    sx, sy = px - skull_shift[:, 0:1], py - skull_shift[:, 1:2]
    poly = torch.cat([photo.upper, photo.lower.flip(0)[1:-1]], dim=0)[None].expand(B, -1, -1)
    dist, inside = polygon_distance(sx, sy, poly)
    alpha = ((torch.where(inside, dist, -dist) + 0.5 * feather) / feather).clamp(0, 1)
    ux, uy = sorted_knots(photo.upper[None, :, 0].expand(B, -1), photo.upper[None, :, 1].expand(B, -1))
    lx, ly = sorted_knots(photo.lower[None, :, 0].expand(B, -1), photo.lower[None, :, 1].expand(B, -1))
    y_up, y_lo = interp_rows(sx, ux, uy), interp_rows(sx, lx, ly)
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


def seal_lips(frames: torch.Tensor, offset: tuple[int, int], px: torch.Tensor, py: torch.Tensor, ey: torch.Tensor,
               pv: torch.Tensor, pu: torch.Tensor, v_up: torch.Tensor, v_low: torch.Tensor, dist: torch.Tensor,
               closing: torch.Tensor, mouth_width: float, feather: float,
               lips: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cover the seam of lips that the rig closed over the photo's own open mouth; returns
    the covered colours [B,3,N] and their weights [B,1,N] for the pixels (px, py).

    FaceMesh's inner lip contour on a smile runs a few pixels inside the teeth, so closed
    lips would keep a broken white line between them. Within a band around the seam (up to
    6 % of the mouth width, growing as the lips close; nothing for frames that do not close),
    each lip's texture is continued from just outside the band toward the seam, moving along
    the mouth's own down axis `ey` [B,2] (so a tilted head works too), and the seam itself
    gets the faint dark line where closed lips meet. `lips` (upper, lower [B] thickness in
    pixels at the middle) keeps the band inside each lip. Samples come from the whole warped
    window `frames`, far inside it, so a frame looks the same in any batch.
    """
    B, _, fh, fw = frames.shape
    ox, oy = offset
    band = (0.06 * mouth_width * closing)[:, None]  # [B,1] pixels
    above = pv < (v_up + v_low) / 2
    if lips is not None:  # never wider than 60 % of each lip, or the skin beyond a thin lip is copied in
        band = torch.minimum(band, torch.where(above, 0.6 * lips[0][:, None], 0.6 * lips[1][:, None]))
    within = (1 - dist / band.clamp_min(1e-3)).clamp(0, 1) * (band > 0)  # 1 on the seam, 0 at the band's edge
    sign = torch.where(above, -1.0, 1.0)
    out = sign * ((band - dist).clamp_min(0) + 1.0)  # pixels along ey: up for the upper lip, down for the lower
    sx = px - ox + out * ey[:, 0:1]
    sy = py - oy + out * ey[:, 1:2]
    grid = torch.stack([sx * (2.0 / fw) - 1.0, sy * (2.0 / fh) - 1.0], -1)[:, None]
    lip = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]
    line = 1 - 0.3 * closing[:, None] * torch.exp(-(dist / max(0.6 * feather, 0.5)) ** 2)
    flat = (within / 0.4).clamp(0, 1)  # fully covered over the inner 60 % of the band, fading over the rest
    wgt = (flat * flat * (3 - 2 * flat) if lips is not None else within * within * (3 - 2 * within)) * (pu.abs() < 1.0)
    return lip * line[:, None], wgt[:, None]
