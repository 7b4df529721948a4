"""Keep every triangle of the deformed mesh the way round it was in the photo.

The inverse warp needs a mesh that does not fold: where a triangle turns over, two parts of
the photo claim the same output pixels and the picture tears. Two things keep it from folding:

- Points of a turned face that the photo cannot show (behind its nose) move exactly like
  the surface in front of them, so the mesh's own folds there stay folded the same way; and
  the rig's depth is a bounded-slope height field (rig.bounded_depth), so a head turn
  compresses the far cheek rather than folding it.
- What can still fold (the lifted upper lip over a thin lip, jaw + pucker + lip width at a
  mouth corner, lips closed over a smile, the band between the moving and the still ring at
  a large turn) is projected back per frame: each triangle below `SQUEEZE` of its area in
  the photo moves its corners along its area gradient just enough to reach it (position-based
  constraint projection, averaged over the triangles that share a corner; `ROUNDS` rounds, and
  up to `MAX_ROUNDS` while one is still turned over). Frames where no triangle is that
  squeezed are left exactly as they were. The projection cannot promise convergence: a
  triangle may in principle stay turned over in extreme motion (none did over motion_scale 2
  clips on rolled, turned and smiling portraits, tested).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SQUEEZE = 0.1  # area ratio (deformed / photo) that every triangle keeps at least
SQUEEZE_LIDS = 0.02  # the strips between the eyelids close on a blink (to about 0.1)
MIN_AREA = 0.1  # pixels²: smaller triangles of the photo are left alone
ROUNDS = 16  # rounds toward the limit (4-10 resolve clips at motion_scale 2); frames that squeeze nothing are not touched
MAX_ROUNDS = 64  # while a triangle is still turned over, up to this many
OVERRELAX = 1.5


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
        return FoldGuard(triangles=f(t[keep], torch.int64), area0=f(area[keep]), limit=f(limit),
                         free=f(moving.astype(np.float32)), hidden=f(hidden, torch.int64),
                         cover=f(np.asarray(cover).reshape(-1, 3), torch.int64),
                         cover_w=f(np.asarray(cover_w).reshape(-1, 3)))

    def to(self, device) -> "FoldGuard":
        return FoldGuard(**{k: v.to(device) for k, v in self.__dict__.items()})

    def unfold(self, rest: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Deformed vertices [B,V,2] with every triangle kept at least at its limit of its photo area."""
        d = tgt - rest[None]
        for _ in range(2):  # a hidden point moves like the surface in front of it (twice: chains)
            if len(self.hidden):
                d[:, self.hidden] = (d[:, self.cover] * self.cover_w[None, ..., None]).sum(2)
        pts = rest[None] + d
        bad = (_signed_area(pts[:, self.triangles]) / self.area0 < self.limit).any(1)
        if not bool(bad.any()):
            return pts
        # Only the frames that need it: the projection below is per frame.
        sub = pts[bad]
        B, V = sub.shape[:2]
        tri = self.triangles
        idx = tri.reshape(-1)
        free = self.free[None, :, None]
        for rnd in range(MAX_ROUNDS):
            p = sub[:, tri]  # [B,G,3,2]
            a, b, c = p[..., 0, :], p[..., 1, :], p[..., 2, :]
            area = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])
            viol = (self.limit * self.area0 - area) / self.area0  # > 0: below its limit (in units of the photo area)
            if not bool((viol > 0).any()) or (rnd >= ROUNDS and not bool((viol > self.limit).any())):
                break  # all at their limit, or (after ROUNDS) none turned over any more
            # Area gradients per corner: perpendicular to the opposite edge.
            grad = torch.stack([torch.stack([b[..., 1] - c[..., 1], c[..., 0] - b[..., 0]], -1),
                                torch.stack([c[..., 1] - a[..., 1], a[..., 0] - c[..., 0]], -1),
                                torch.stack([a[..., 1] - b[..., 1], b[..., 0] - a[..., 0]], -1)], 2)
            grad = grad / self.area0[None, :, None, None]
            w = self.free[tri][None, ..., None]  # still corners do not move
            norm = (grad * grad * w).sum((2, 3)).clamp_min(1e-9)
            lam = viol.clamp_min(0) / norm  # position-based projection onto ratio == limit
            step = (lam[..., None, None] * grad * w).reshape(B, -1, 2)
            cnt = (viol > 0).float()[..., None].expand(-1, -1, 3).reshape(B, -1)
            num = torch.zeros_like(sub).index_add_(1, idx, step)
            den = torch.zeros(B, V, device=sub.device, dtype=sub.dtype).index_add_(1, idx, cnt)
            sub = sub + OVERRELAX * num / den.clamp_min(1.0)[..., None] * free
        pts = pts.clone()
        pts[bad] = sub
        return pts


def _signed_area(p):
    """Twice the signed area of triangles [..., 3, 2] (numpy or torch)."""
    a, b, c = p[..., 0, :], p[..., 1, :], p[..., 2, :]
    return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])
