"""Batched helpers for painting inside deformed contours (mouth, eyelids): every function
works on [B, ...] tensors, one row per frame, on any device."""
from __future__ import annotations

import torch


def interp_rows(u: torch.Tensor, ku: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear v(u) per frame: u [B,N], knots ku/kv [B,K] (ku ascending) -> [B,N]."""
    idx = torch.searchsorted(ku.contiguous(), u.contiguous()).clamp(1, ku.shape[1] - 1)
    u0, u1 = ku.gather(1, idx - 1), ku.gather(1, idx)
    v0, v1 = kv.gather(1, idx - 1), kv.gather(1, idx)
    t = ((u - u0) / (u1 - u0).clamp_min(1e-6)).clamp(0, 1)
    return v0 + t * (v1 - v0)


def sorted_knots(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Knots [B,K] of a contour sorted by u, ready for `interp_rows`."""
    order = u.argsort(dim=1)
    return u.gather(1, order), v.gather(1, order)


def polygon_distance(px: torch.Tensor, py: torch.Tensor, poly: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


def pixel_grid(x0: int, y0: int, x1: int, y1: int, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres of the box [x0,x1) x [y0,y1) as px, py [B, h*w] (row-major)."""
    ys = torch.arange(y0, y1, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(x0, x1, device=device, dtype=torch.float32) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return gx.reshape(1, -1).expand(batch, -1), gy.reshape(1, -1).expand(batch, -1)


def lips_box(tgt: torch.Tensor, offset: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Box (x0, y0, x1, y1) in crop pixels around the outer lips of every frame of `tgt` [B,V,2]
    (2 px margin), inside the window of `size` (w, h) at `offset`; None when it is empty."""
    from . import topology as tp

    ox, oy = offset
    fw, fh = size
    outer = tgt[:, list(tp.OUTER_UPPER + tp.OUTER_LOWER)]
    lo = outer.amin(dim=(0, 1)).floor() - 2
    hi = outer.amax(dim=(0, 1)).ceil() + 2
    x0, y0 = int(lo[0].clamp(ox, ox + fw - 1)), int(lo[1].clamp(oy, oy + fh - 1))
    x1, y1 = int(hi[0].clamp(ox + 1, ox + fw)), int(hi[1].clamp(oy + 1, oy + fh))
    return None if x1 - x0 < 2 or y1 - y0 < 2 else (x0, y0, x1, y1)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B,C,h,w] with replicated edges (none for sigma <= 0.4)."""
    import torch.nn.functional as F

    if sigma <= 0.4:
        return x
    k = int(max(1, round(sigma * 1.5)))
    xk = torch.arange(-k, k + 1, device=x.device, dtype=torch.float32)
    g = torch.exp(-0.5 * (xk / sigma) ** 2)
    g = g / g.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (k, k, 0, 0), mode="replicate"), g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, k, k), mode="replicate"), g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
