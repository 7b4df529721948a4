"""The rig's depth: which FaceMesh points the photo cannot show, and a depth a head turn cannot tear.

FaceMesh places every point of the face, also those hidden on a turned face (the far side
of the nose, the far cheek). Moved with their own depth they drag the visible surface
over itself; `front_surface` finds what lies in front of each point, and `bounded_depth`
limits how fast depth may change across the picture.
"""
from __future__ import annotations

import numpy as np

MAX_DEPTH_SLOPE = 2.5  # steepest depth change per pixel across the image a head turn may act on


def front_surface(xy: np.ndarray, z: np.ndarray, triangles: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each point [N,2]: the depth of the nearest front-facing triangle over it (inf where
    none), that triangle's index and the point's barycentric weights in it.

    On a turned face FaceMesh also places points the photo cannot show (the far side of the
    nose, the far cheek behind it); there its mesh folds back over the visible surface.
    """
    t = np.asarray(triangles)
    p = xy[t]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    front = np.flatnonzero((np.sign(det) == (np.sign(np.sum(det)) or 1.0)) & (np.abs(det) > 1e-6))
    zt = np.asarray(z, np.float64)[t[front]]
    n = len(xy)
    depth, which, bary = np.full(n, np.inf), np.full(n, -1), np.zeros((n, 3))
    for start in range(0, n, 256):  # bounded temporaries: [256 points, triangles]
        q = xy[start:start + 256, None, :] - p[None, front, 0]
        d = det[None, front]
        l1 = (q[..., 0] * e2[None, front, 1] - q[..., 1] * e2[None, front, 0]) / d
        l2 = (q[..., 1] * e1[None, front, 0] - q[..., 0] * e1[None, front, 1]) / d
        inside = (l1 >= -1e-6) & (l2 >= -1e-6) & (l1 + l2 <= 1 + 1e-6)
        zi = zt[None, :, 0] + l1 * (zt[None, :, 1] - zt[None, :, 0]) + l2 * (zt[None, :, 2] - zt[None, :, 0])
        zi = np.where(inside, zi, np.inf)
        k = zi.argmin(axis=1)
        rows = np.arange(len(k))
        depth[start:start + 256] = zi[rows, k]
        which[start:start + 256] = np.where(np.isfinite(zi[rows, k]), front[k], -1)
        a, b = l1[rows, k], l2[rows, k]
        bary[start:start + 256] = np.stack([1 - a - b, a, b], 1)
    return depth, which, bary


HIDDEN_MARGIN = 0.02  # face heights: a point this far behind the surface in front of it is hidden


def bounded_depth(xy: np.ndarray, z: np.ndarray, triangles: np.ndarray, free: np.ndarray,
                  max_slope: float = MAX_DEPTH_SLOPE, iterations: int = 200) -> np.ndarray:
    """Depth per vertex whose slope over every triangle (in image pixels) is at most `max_slope`.

    A head turn moves each point sideways by sin(yaw) x its depth, so where the depth changes
    faster across the image than cot(yaw) the turn folds the mesh: at a turned face's far
    cheek and the far side of its nose the surface runs almost along the line of sight
    (FaceMesh's mesh even folds over itself there in the photo), and the picture tore. With
    the slope bounded at 2.5 a turn of up to ~20 degrees can only compress the image there,
    the nose still moves over the cheek, and a frontal face is unchanged (its slopes stay
    below the bound away from its outline). Only vertices in `free` change; triangles of
    under a pixel of area are skipped. Iterative projection: each too-steep triangle pulls
    its vertices' depths toward its mean just enough to reach the bound.
    """
    z = np.asarray(z, np.float64).copy()
    t = np.asarray(triangles)
    p = xy[t]  # [T,3,2]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = (np.abs(det) >= 2.0) & free[t].any(axis=1)
    t, e1, e2, det = t[ok], e1[ok], e2[ok], det[ok]
    n = len(z)
    for _ in range(iterations):
        zt = z[t]
        dz1, dz2 = zt[:, 1] - zt[:, 0], zt[:, 2] - zt[:, 0]
        gx = (dz1 * e2[:, 1] - dz2 * e1[:, 1]) / det
        gy = (dz2 * e1[:, 0] - dz1 * e2[:, 0]) / det
        slope = np.hypot(gx, gy)
        steep = slope > max_slope * 1.001
        if not steep.any():
            break
        mean = zt[steep].mean(axis=1, keepdims=True)
        scale = (max_slope / slope[steep])[:, None]
        target = mean + (zt[steep] - mean) * scale
        idx = t[steep].ravel()
        acc = np.bincount(idx, weights=target.ravel(), minlength=n)
        cnt = np.bincount(idx, minlength=n)
        upd = (cnt > 0) & free
        z[upd] = acc[upd] / cnt[upd]
    return z
