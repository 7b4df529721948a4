"""Closed eyelids: a clean lid drawn over the eye while it blinks.

The warp alone closes an eye by stretching the upper lid down; that stretches the
lashes into streaks and squeezes the white of the eye into a bright line, so the
eye reads as half open (to viewers and to FaceMesh). While the lids close, this
paints the covered part of the eye with the photo's own lid skin colour, shaded
darker toward the lash line, adds a dark lash line where the lids meet, and
darkens the squeezed eye between them. Batched over frames, on any device.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import topology as tp
from .contour import interp_rows, sorted_knots

EYES = ((tp.RIGHT_EYE_UPPER, tp.RIGHT_EYE_LOWER, tp.RIGHT_LID_FOLD),
        (tp.LEFT_EYE_UPPER, tp.LEFT_EYE_LOWER, tp.LEFT_LID_FOLD))


@dataclass
class LidStyle:
    skin: torch.Tensor  # [2,3] lid skin colour per eye (0..1)
    lash: torch.Tensor  # [2,3] lash-line colour per eye
    grain: float


def estimate_lid_style(crop: np.ndarray, landmarks: np.ndarray, grain: float) -> LidStyle:
    """Lid skin colour of each eye: the lighter pixels between the lash line and the lid fold."""
    img = crop.astype(np.float32) / 255.0
    h, w = img.shape[:2]
    p2 = landmarks[:, :2]
    skins, lashes = [], []
    for upper, _, fold in EYES:
        up = p2[list(upper[1:-1])]
        fd = p2[list(fold)]
        # Pair each fold point with the nearest upper-lid point; sample between them.
        near = up[np.argmin(((up[None] - fd[:, None]) ** 2).sum(-1), axis=1)]
        pts = np.concatenate([near + t * (fd - near) for t in (0.45, 0.6, 0.75)])
        xs = np.clip(pts[:, 0].round().astype(int), 0, w - 1)
        ys = np.clip(pts[:, 1].round().astype(int), 0, h - 1)
        vals = img[ys, xs]
        lum = vals @ np.array([0.299, 0.587, 0.114], np.float32)
        keep = lum >= np.percentile(lum, 40)  # skip lashes and shadow
        skin = vals[keep].mean(0) if keep.any() else vals.mean(0)
        skins.append(skin)
        lashes.append(skin * 0.3)
    t = lambda a: torch.as_tensor(np.clip(np.stack(a), 0, 1), dtype=torch.float32)  # noqa: E731
    return LidStyle(skin=t(skins), lash=t(lashes), grain=grain)


def composite_lids(frames: torch.Tensor, offset: tuple[int, int], tgt: torch.Tensor, rest_eyes: torch.Tensor,
                   blink: torch.Tensor, style: LidStyle, noise: torch.Tensor) -> torch.Tensor:
    """Draw closing lids, in place, into the window `frames` [B,3,h,w] whose top-left is `offset`.

    `tgt` [B,V,2] deformed vertices; `rest_eyes` [B,2,18,2] each eye's upper then lower lid
    contour as it would be with the lids open (moving with the head); `blink` [B] 0..1.
    """
    closure = ((blink - 0.1) / 0.4).clamp(0, 1)
    closure = closure * closure * (3 - 2 * closure)
    if not bool((closure > 0).any()):
        return frames
    B, _, fh, fw = frames.shape
    ox, oy = offset
    dev = frames.device
    for e, (upper, lower, _) in enumerate(EYES):
        rest_up = rest_eyes[:, e, :9]
        cur_up, cur_lo = tgt[:, list(upper)], tgt[:, list(lower)]
        c0, c1 = rest_up[:, 0], rest_up[:, -1]
        axis = c1 - c0
        width = axis.norm(dim=-1, keepdim=True).clamp_min(1.0)
        ex = axis / width
        ey = torch.stack([-ex[:, 1], ex[:, 0]], -1)
        ey = torch.where(ey[:, 1:2] < 0, -ey, ey)
        pad = 0.12 * width  # lashes stand above the open lid line
        box = torch.cat([rest_eyes[:, e], cur_up, cur_lo], 1)
        lo = box.amin(dim=(0, 1)) - pad.max() - 2
        hi = box.amax(dim=(0, 1)) + pad.max() * 0.5 + 2
        x0, y0 = int(lo[0].clamp(ox, ox + fw - 1)), int(lo[1].clamp(oy, oy + fh - 1))
        x1, y1 = int(hi[0].clamp(ox + 1, ox + fw)), int(hi[1].clamp(oy + 1, oy + fh))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        ys = torch.arange(y0, y1, device=dev, dtype=torch.float32) + 0.5
        xs = torch.arange(x0, x1, device=dev, dtype=torch.float32) + 0.5
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        h, w = gy.shape
        p = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)[None] - c0[:, None]  # [B,N,2]

        def uv(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            d = q - c0[:, None]
            return (d * ex[:, None]).sum(-1) / width, (d * ey[:, None]).sum(-1)

        pu = (p * ex[:, None]).sum(-1) / width
        pv = (p * ey[:, None]).sum(-1)
        v_rest = interp_rows(pu, *sorted_knots(*uv(rest_up)))
        v_cur = interp_rows(pu, *sorted_knots(*uv(cur_up)))
        v_low = interp_rows(pu, *sorted_knots(*uv(cur_lo)))
        soft = (0.02 * width).clamp_min(0.7)
        across = (torch.minimum(pu, 1 - pu) / 0.08).clamp(0, 1)  # fade at the corners
        top = v_rest - pad
        lid_a = ((pv - top) / pad).clamp(0, 1) * ((v_cur - pv) / soft + 0.5).clamp(0, 1)
        t = ((pv - v_rest) / (v_cur - v_rest).clamp_min(1.0)).clamp(0, 1)
        shade = 1.0 - 0.15 * t
        region = frames[:, :, y0 - oy:y1 - oy, x0 - ox:x1 - ox].reshape(B, 3, -1)
        # Lid colour = the skin just above the drawn lid in this very frame (no patch edge),
        # falling back to the photo's lid colour where that band is empty.
        band = ((pv < top) & (pv > top - 0.08 * width) & (across > 0.3)).float()
        n_band = band.sum(-1, keepdim=True)
        above = (region * band[:, None]).sum(-1) / n_band.clamp_min(1.0)
        base = torch.where(n_band > 3, above, style.skin[e].to(dev)[None].expand(B, -1))
        skin = base[:, :, None] * shade[:, None]
        lash_w = (0.035 * width).clamp_min(0.8)
        lash_a = torch.exp(-((pv - v_cur) / lash_w) ** 2)
        # The squeezed eye between the lids goes dark as they meet.
        gap_a = ((pv - v_cur) / soft + 0.5).clamp(0, 1) * ((v_low - pv) / soft + 0.5).clamp(0, 1)
        lash_a = torch.maximum(lash_a, gap_a)
        k = (closure[:, None] * across)
        lid_a, lash_a = lid_a * k, lash_a * k
        grain = noise[y0:y1, x0:x1].reshape(1, 1, -1) * style.grain
        out = region * (1 - lid_a[:, None]) + (skin + grain) * lid_a[:, None]
        lash = style.lash[e].to(dev).view(1, 3, 1)
        out = out * (1 - lash_a[:, None]) + lash * lash_a[:, None]
        frames[:, :, y0 - oy:y1 - oy, x0 - ox:x1 - ox] = out.view(B, 3, h, w)
    return frames
