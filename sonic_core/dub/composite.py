"""Paste a mouth into video frames: warp it onto the target contour, match its light, blend.

The source (exemplar crops, or any image with known warp points) is warped by a thin-plate
spline that takes its warp points onto the frame's target points: lips and chin where the
new speech wants them, cheeks and nose where the frame has them, so the pasted skin lines up
with the frame around the seam. The frame's low-frequency light is carried onto the paste
from the skin around the mouth (a normalised convolution that skips both mouths), and the
result is blended through a feathered hull from below the nose to under the chin. Batched:
one window per frame, all frames of a chunk at once, on the frames' device.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import shape as sh

TPS_STIFFNESS = 1e-3  # regularisation of the spline (landmarks are noisy by a fraction of a pixel)
MARGIN = 0.04  # the pasted hull grows by this share of the eye-corner distance ...
CHIN_ROOM = 0.14  # ... and below the chin by this much more (the jaw's edge moves; beside the face, hands may be)
FEATHER = 0.22  # ... and fades in over this share, inside it
LIGHT_TOLERANCE = 0.12  # a pixel differing by more than this (0..1) says little about the light
LIGHT_SIGMA = 0.25  # the light correction's blur, in eye-corner distances
CELL = 4  # the spline, masks and light are worked out per 4x4 pixels and interpolated (all smooth)


def _u(r2: torch.Tensor) -> torch.Tensor:
    return 0.5 * r2 * torch.log(r2.clamp(min=1e-12))


def tps_fit(ctrl: torch.Tensor, values: torch.Tensor, stiffness: float = TPS_STIFFNESS) -> torch.Tensor:
    """Spline coefficients [B,K+3,2] mapping control points ctrl [B,K,2] to values [B,K,2]
    (coordinates normalised by the caller)."""
    B, K, _ = ctrl.shape
    d2 = ((ctrl[:, :, None] - ctrl[:, None]) ** 2).sum(-1)
    A = torch.zeros(B, K + 3, K + 3, dtype=torch.float64, device=ctrl.device)
    A[:, :K, :K] = _u(d2).double() + stiffness * torch.eye(K, dtype=torch.float64, device=ctrl.device)
    P = torch.cat([torch.ones(B, K, 1, device=ctrl.device), ctrl], -1).double()
    A[:, :K, K:] = P
    A[:, K:, :K] = P.transpose(1, 2)
    rhs = torch.zeros(B, K + 3, 2, dtype=torch.float64, device=ctrl.device)
    rhs[:, :K] = values.double()
    return torch.linalg.solve(A, rhs).float()


def hull_halfplanes(points: np.ndarray, edges: int = 48) -> np.ndarray:
    """Convex hulls of point sets [B,P,2] as inward half-planes [B,edges,3] (nx, ny, c): a point
    x is inside where nx*x + ny*y + c >= 0 for every edge; the value is its distance to that edge."""
    out = np.zeros((len(points), edges, 3), np.float32)
    for b, pts in enumerate(points):
        hull = _monotone_chain(pts.astype(np.float64))
        a, c = hull, np.roll(hull, -1, axis=0)
        d = c - a
        n = np.stack([-d[:, 1], d[:, 0]], 1)  # left of each edge of a counter-clockwise hull: inward
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
        planes = np.concatenate([n, -(n * a).sum(1, keepdims=True)], 1)
        out[b] = planes[np.minimum(np.arange(edges), len(planes) - 1)]
    return out


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def _monotone_chain(p: np.ndarray) -> np.ndarray:
    p = p[np.lexsort((p[:, 1], p[:, 0]))]

    def half(seq):
        h: list[np.ndarray] = []
        for q in seq:
            while len(h) >= 2 and _cross(h[-1] - h[-2], q - h[-2]) <= 0:
                h.pop()
            h.append(q)
        return h

    lower, upper = half(p), half(p[::-1])
    return np.array(lower[:-1] + upper[:-1])  # counter-clockwise with y up


def inside_distance(planes: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Signed distance [B,h,w] into the hulls (planes [B,E,3]) of pixel centres xy [B,h,w,2]."""
    d = xy[..., None, 0] * planes[:, None, None, :, 0] + xy[..., None, 1] * planes[:, None, None, :, 1] \
        + planes[:, None, None, :, 2]
    return d.amin(-1)


def windows(region: np.ndarray, scale: np.ndarray, height: int, width: int) -> tuple[np.ndarray, int, int]:
    """One box per frame around its region points [B,P,2] grown by the margin: top-left
    corners [B,2] (int) and a common size (h, w) that fits inside the frame."""
    pad = (MARGIN + 0.1) * scale[:, None]
    lo = np.floor(region.min(1) - pad).astype(np.int64)
    hi = np.ceil(region.max(1) + pad).astype(np.int64)
    w = int(min(width, (hi[:, 0] - lo[:, 0]).max()))
    h = int(min(height, (hi[:, 1] - lo[:, 1]).max()))
    centre = (lo + hi) // 2
    x0 = np.clip(centre[:, 0] - w // 2, 0, width - w)
    y0 = np.clip(centre[:, 1] - h // 2, 0, height - h)
    return np.stack([x0, y0], 1), h, w


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B,C,h,w] (sigma in pixels of x), reflect padding."""
    r = max(1, int(3 * sigma))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / max(sigma, 1e-3)) ** 2)
    k = (k / k.sum())
    C = x.shape[1]
    r_h, r_w = min(r, x.shape[3] - 1), min(r, x.shape[2] - 1)
    x = F.conv2d(F.pad(x, (r_h, r_h, 0, 0), mode="replicate"), k[r - r_h:r + r_h + 1].view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return F.conv2d(F.pad(x, (0, 0, r_w, r_w), mode="replicate"), k[r - r_w:r + r_w + 1].view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


class MouthCompositor:
    """Warps, relights and blends mouths into frames (see module docstring)."""

    def __init__(self, device: torch.device):
        self.device = device

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor, sources: torch.Tensor, source_points: torch.Tensor,
                 weights: torch.Tensor, target_points: np.ndarray, own_points: np.ndarray,
                 scale: np.ndarray) -> torch.Tensor:
        """frames [B,H,W,3] uint8 (changed in place and returned); per frame k sources
        sources [B,k,3,h,w] 0..1 with their warp points source_points [B,k,Wp,2] (source pixels)
        and blend weights [B,k]; target_points [B,Wp,2]: where the warp points go in the frame;
        own_points [B,Wp,2]: where the frame has them now; scale [B]: eye-corner distance, px."""
        B, H, W = frames.shape[:3]
        dev = frames.device
        k, sh_, sw_ = sources.shape[1], sources.shape[3], sources.shape[4]
        region_idx = [sh.WARP_POINTS.index(i) for i in sh.REGION]
        region = np.concatenate([target_points[:, region_idx], own_points[:, region_idx]], 1)
        chin = [sh.WARP_POINTS.index(i) for i in sh.CHIN_EDGE]
        nose, tip = sh.WARP_POINTS.index(2), sh.WARP_POINTS.index(152)
        down = target_points[:, tip] - target_points[:, nose]
        down /= np.maximum(np.linalg.norm(down, axis=1, keepdims=True), 1e-6)
        below = np.concatenate([target_points[:, chin], own_points[:, chin]], 1) + \
            (CHIN_ROOM * scale)[:, None, None] * down[:, None]
        region = np.concatenate([region, below], 1)
        corners, h, w = windows(region, scale, H, W)
        off = torch.as_tensor(corners, dtype=torch.float32, device=dev)
        # Everything smooth (the spline, the masks, the light) is worked out on a grid of
        # CELL-pixel cells, at their centres, and interpolated to the pixels.
        S = CELL
        ch, cw = -(-h // S), -(-w // S)
        cy = torch.arange(ch, device=dev, dtype=torch.float32) * S + S / 2
        cx = torch.arange(cw, device=dev, dtype=torch.float32) * S + S / 2
        gy, gx = torch.meshgrid(cy, cx, indexing="ij")
        xy = torch.stack([gx, gy], -1)[None] + off[:, None, None, :]  # [B,ch,cw,2] frame pixels

        def fine(x: torch.Tensor) -> torch.Tensor:  # [B,C,ch,cw] -> [B,C,h,w]
            return F.interpolate(x, size=(ch * S, cw * S), mode="bilinear", align_corners=False)[..., :h, :w]

        # Spline from frame pixels (target points) to source pixels, normalised for conditioning;
        # its kernel depends on the target points only, so all k sources share it.
        s = torch.as_tensor(scale, dtype=torch.float32, device=dev)[:, None, None]
        tgt = torch.as_tensor(target_points, dtype=torch.float32, device=dev)
        mu = tgt.mean(1, keepdim=True)
        ctrl = (tgt - mu) / s
        K = ctrl.shape[1]
        coef = tps_fit(ctrl.repeat_interleave(k, 0), source_points.reshape(B * k, -1, 2)).view(B, k, K + 3, 2)
        q = (xy.reshape(B, -1, 2) - mu) / s  # [B,N,2]
        kern = _u(((q[:, :, None] - ctrl[:, None]) ** 2).sum(-1))  # [B,N,K]
        mapped = torch.einsum("bnk,bjkc->bjnc", kern, coef[:, :, :K]) + coef[:, :, None, K] \
            + q[:, None, :, :1] * coef[:, :, None, K + 1] + q[:, None, :, 1:] * coef[:, :, None, K + 2]
        mapped = fine(mapped.reshape(B * k, ch, cw, 2).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        grid = torch.stack([(mapped[..., 0] + 0.5) * (2.0 / sw_) - 1.0, (mapped[..., 1] + 0.5) * (2.0 / sh_) - 1.0], -1)
        warped = F.grid_sample(sources.reshape(B * k, 3, sh_, sw_), grid, mode="bilinear", padding_mode="border",
                               align_corners=False).view(B, k, 3, h, w)
        paste = (warped * weights.to(dev).view(B, k, 1, 1, 1)).sum(1)

        rows = torch.stack([frames[b, y:y + h, x:x + w] for b, (x, y) in enumerate(corners.tolist())])
        base = rows.permute(0, 3, 1, 2).float() / 255.0

        # The pasted hull, and the skin around both mouths that says how the frame is lit.
        planes = torch.as_tensor(hull_halfplanes(region), device=dev)
        inside = inside_distance(planes, xy) / s
        mask = ((inside + MARGIN) / FEATHER).clamp(0, 1)
        mask = fine((mask * mask * (3 - 2 * mask))[:, None])
        lips = [sh.WARP_POINTS.index(i) for i in sh.OUTER]
        mouths = np.concatenate([target_points[:, lips], own_points[:, lips]], 1)
        near_mouth = inside_distance(torch.as_tensor(hull_halfplanes(mouths, 24), device=dev), xy) / s
        skin = ((-near_mouth - 0.08) / 0.1).clamp(0, 1)[:, None] * (inside > -MARGIN)[:, None].float()
        diff = base - paste
        # Light differs smoothly and a little; a large difference is something out of place.
        ok = torch.exp(-(diff.abs().amax(1, keepdim=True) / LIGHT_TOLERANCE) ** 2)
        pool = lambda x: F.avg_pool2d(x, S, ceil_mode=True)  # noqa: E731  (pixels -> cells)
        paste = paste + fine(self._light(pool(diff * ok), skin * pool(ok), float(np.median(scale)) / S))
        out = base + mask * (paste - base)
        out = (out.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1)
        for b, (x, y) in enumerate(corners.tolist()):
            frames[b, y:y + h, x:x + w] = out[b]
        return frames

    @staticmethod
    def _light(diff: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
        """The frame's light minus the paste's, in cells: `diff` (already weighted by how well
        each cell shows light) averaged where `weight` says to look, blurred and filled in
        between; `scale` is the eye-corner distance in cells."""
        sigma = LIGHT_SIGMA * scale
        d, wt = _blur(diff * weight, sigma), _blur(weight, sigma)
        corr = d / wt.clamp(min=1e-3)
        return corr * (wt / (wt + 0.02))  # nothing to learn from: no correction
