"""Keep every triangle of the deformed mesh the way round it was in the photo.

The inverse warp needs a mesh that does not fold: where a triangle turns over, two parts of
the photo claim the same output pixels and the picture tears. Points of a turned face that the photo cannot show (behind its nose)
move exactly like the surface in front of them, so the mesh's own folds there stay folded
the same way. The rig's depth is already a
bounded-slope height field (rig.bounded_depth), so ordinary head motion compresses rather
than folds; what can still fold (a head turned far toward a silhouette, the lifted upper lip
over a thin lip, jaw + pucker + lip width together at a mouth corner, the band between the
moving and the still ring at a large turn) is undone here, per frame: each triangle squeezed
below a quarter of its area in the photo pulls its corners toward its own shape from the
photo, turned to fit (shape matching), a few times. The pull grows continuously with the
squeeze, so motion stays smooth in time, and frames that squeeze nothing are left exactly
as they were.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SQUEEZE = 0.25  # area ratio (deformed / photo) below which a triangle is pushed back toward its shape
SQUEEZE_LIDS = 0.05  # the strips between the eyelids close on a blink: pushed back only when about to turn over
MIN_AREA = 0.1  # pixels²: smaller triangles of the photo are left alone
ITERATIONS = 80  # at most; frames that squeeze nothing stop after the first check


@dataclass
class FoldGuard:
    triangles: torch.Tensor  # [G,3] triangles that must keep their orientation
    area0: torch.Tensor  # [G] their signed area in the photo (2x, pixels²)
    limit: torch.Tensor  # [G] the area ratio below which each one is pushed back
    free: torch.Tensor  # [V] float 0/1: vertices that may be moved (still ones stay put)
    hidden: torch.Tensor  # [H] vertices behind the visible surface in the photo (a turned face's far side)
    cover: torch.Tensor  # [H,3] vertices of the front triangle that hides each one
    cover_w: torch.Tensor  # [H,3] its barycentric weights in that triangle

    @staticmethod
    def build(xy: np.ndarray, triangles: np.ndarray, mouth: np.ndarray, lids: np.ndarray, moving: np.ndarray,
              hidden: np.ndarray, cover: np.ndarray, cover_w: np.ndarray) -> "FoldGuard":
        """`mouth`, `lids`: [T] bool, the strips that close the mouth (it opens and closes freely)
        and the eyes (they close on a blink);
        `hidden` [H] vertices that move exactly like the point in front of them: `cover_w` [H,3]
        weights of the vertices `cover` [H,3]."""
        t = np.asarray(triangles, np.int64)
        area = _signed_area(xy[t])
        keep = ~mouth & (np.abs(area) >= 2 * MIN_AREA)
        limit = np.where(lids, SQUEEZE_LIDS, SQUEEZE)[keep]
        f = lambda a, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dt)  # noqa: E731
        return FoldGuard(triangles=f(t[keep], torch.int64), area0=f(area[keep]), limit=f(limit), free=f(moving.astype(np.float32)), hidden=f(hidden, torch.int64),
                         cover=f(np.asarray(cover).reshape(-1, 3), torch.int64), cover_w=f(np.asarray(cover_w).reshape(-1, 3)))

    def to(self, device) -> "FoldGuard":
        return FoldGuard(**{k: v.to(device) for k, v in self.__dict__.items()})

    def squeeze(self, pts: torch.Tensor) -> torch.Tensor:
        """[B,G] how far each triangle is from folding: 0 at >= its limit of its photo area, 1 at 0 or turned over."""
        ratio = _signed_area(pts[:, self.triangles]) / self.area0
        return ((self.limit - ratio) / self.limit).clamp(0.0, 1.0)

    def unfold(self, rest: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Deformed vertices [B,V,2] with squeezed triangles pushed back toward their own shape."""
        d = tgt - rest[None]
        B, V = d.shape[:2]
        for _ in range(2):  # a hidden point moves like the surface in front of it (twice: chains)
            if len(self.hidden):
                d[:, self.hidden] = (d[:, self.cover] * self.cover_w[None, ..., None]).sum(2)
        r = rest[self.triangles]  # [G,3,2]
        r = r - r.mean(1, keepdim=True)
        idx = self.triangles.reshape(1, -1).expand(B, -1)
        for _ in range(ITERATIONS):
            pts = rest[None] + d
            p = pts[:, self.triangles]  # [B,G,3,2]
            s = self.squeeze(pts)
            if not bool((s > 0).any()):
                break
            # Shape matching: the photo's triangle, turned to fit the squeezed one best (2-D
            # Procrustes), is where its corners should be; pull them there by the squeeze.
            c = p.mean(2, keepdim=True)
            q = p - c
            dot = (q * r[None]).sum((2, 3))
            crs = (r[None, ..., 0] * q[..., 1] - r[None, ..., 1] * q[..., 0]).sum(2)
            ang = torch.atan2(crs, dot)
            cos, sin = torch.cos(ang)[..., None], torch.sin(ang)[..., None]
            goal = c + torch.stack([cos * r[None, ..., 0] - sin * r[None, ..., 1],
                                    sin * r[None, ..., 0] + cos * r[None, ..., 1]], -1)
            wt = s[..., None].expand(-1, -1, 3).reshape(B, -1)  # [B,3G]
            pull = ((goal - p) * s[..., None, None]).reshape(B, -1, 2)
            num = torch.zeros_like(d).index_add_(1, idx[0], pull)
            den = torch.zeros(B, V, device=d.device, dtype=d.dtype).index_add_(1, idx[0], wt)
            step = num / den.clamp_min(1e-6)[..., None] * den.clamp(max=1.0)[..., None]
            d = d + 0.8 * step * self.free[None, :, None]
        return rest[None] + d


def _signed_area(p):
    """Twice the signed area of triangles [..., 3, 2] (numpy or torch)."""
    a, b, c = p[..., 0, :], p[..., 1, :], p[..., 2, :]
    return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])
