"""The animation rig: the photo's FaceMesh extended into a mesh that covers the whole crop.

The 468 FaceMesh points cover only the face. To move the head and nothing else, the
rig adds two rings outside the face oval (hair/forehead/neck, then a fading ring)
and a fixed ring on the crop border, triangulates everything, and closes the mouth
and eye holes with strips so every output pixel belongs to exactly one triangle.
Per-vertex weights say how much each motion channel (head, jaw, upper lip, lip
width, blink, brows) moves each vertex; the per-frame deformation is then a few
batched multiply-adds (see `deform.py`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import topology as tp
from .folds import FoldGuard


@dataclass
class FaceRig:
    size: int  # the crop is size x size pixels
    vertices: torch.Tensor  # [V, 3] float32 crop pixels (x, y, z); first 468 are FaceMesh points
    triangles: torch.Tensor  # [T, 3] int64
    mouth_triangles: torch.Tensor  # [T] bool: triangles closing the mouth hole (interior is synthesized there)
    head_weight: torch.Tensor  # [V] share of the rigid head motion
    jaw_dir: torch.Tensor  # [V, 2] displacement per unit jaw opening (pixels per 1.0 = mouth width)
    close_dir: torch.Tensor  # [V, 2] displacement that brings the photo's parted lips together (zeros if closed)
    rest_open: float  # the photo's own lip opening at the centre, in mouth widths (0 for closed lips)
    lip_width_dir: torch.Tensor  # [V, 2] displacement per unit relative mouth-width change
    blink_dir: torch.Tensor  # [V, 2] displacement for fully closed eyes
    brow_dir: torch.Tensor  # [V, 2] displacement for a full brow raise
    pucker_dir: torch.Tensor  # [V, 2] displacement for fully rounded, protruded lips
    tuck_dir: torch.Tensor  # [V, 2] displacement for the lower lip tucked under the upper teeth
    pivot: torch.Tensor  # [3] head rotation centre
    face_height: float  # eye midpoint to chin, pixels
    mouth_width: float  # outer lip corner to corner, pixels
    down: torch.Tensor  # [2] unit vector pointing down the face in the image
    tri_map: torch.Tensor  # [size, size] int64: source triangle of each pixel centre
    moving_vertices: torch.Tensor  # [V] bool: vertices that some motion channel moves
    guard: FoldGuard  # keeps the deformed mesh from folding (see folds.py)

    @property
    def close_span(self) -> float:
        """jaw_open at which parted lips reach the photo's own opening (0 for closed-lip photos).

        Speech keeps a smiling face's lips apart most of the time (real smiling speakers close
        them on p/b/m and in pauses), so the lips close over only the lowest openings and every
        opening above this one drops the jaw past the photo's smile.
        """
        return min(self.rest_open, CLOSING_SPAN)

    def active_vertices(self) -> torch.Tensor:
        """Vertices of every triangle that can deform: outside their hull the frame is the photo."""
        moving_tris = self.moving_vertices[self.triangles].any(dim=1)
        return torch.unique(self.triangles[moving_tris])

    def to(self, device: torch.device | str) -> "FaceRig":
        kw = {k: (v.to(device) if isinstance(v, (torch.Tensor, FoldGuard)) else v) for k, v in self.__dict__.items()}
        return FaceRig(**kw)


def _smoothstep(x: np.ndarray, a: float, b: float) -> np.ndarray:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _relax(values: np.ndarray, triangles: np.ndarray, pinned: np.ndarray, iterations: int) -> np.ndarray:
    """Jacobi smoothing of a per-vertex field over the mesh edges, keeping pinned vertices."""
    n = len(values)
    e = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    deg = np.bincount(e[:, 0], minlength=n).astype(np.float64)
    v = values.astype(np.float64).copy()
    for _ in range(iterations):
        avg = np.bincount(e[:, 0], weights=v[e[:, 1]], minlength=n) / np.maximum(deg, 1)
        v = np.where(pinned | (deg == 0), v, 0.5 * v + 0.5 * avg)
    return v


def boundary_loop(triangles: np.ndarray) -> np.ndarray:
    """Ordered vertices of the longest boundary cycle of a triangle mesh (the face oval)."""
    from collections import Counter, defaultdict

    edges = Counter()
    for a, b, c in triangles:
        for u, v in ((a, b), (b, c), (c, a)):
            edges[(min(u, v), max(u, v))] += 1
    adj = defaultdict(list)
    for (u, v), n in edges.items():
        if n == 1:
            adj[u].append(v)
            adj[v].append(u)
    seen: set[int] = set()
    best: list[int] = []
    for start in adj:
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [n for n in adj[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            seen.add(cur)
            loop.append(cur)
        if len(loop) > len(best):
            best = loop
    return np.asarray(best, dtype=np.int64)


def face_outline(xy: np.ndarray, triangles: np.ndarray, size: int):
    """The face's outline as the picture shows it: ordered indices of the mesh points on the
    edge of the area its triangles cover, and a test of which points lie in that area.

    FaceMesh's own boundary loop is the outline of a frontal face only: on a turned face it
    runs behind the far cheek and nose, which then stick out past it (and the mesh built
    outside it would overlap them).
    """
    from PIL import Image, ImageDraw
    from scipy.ndimage import binary_fill_holes

    # Drawn at about 256 px: the outline only has to pick mesh points and sort outer triangles.
    k = min(1.0, 256.0 / size)
    small = max(8, int(round(size * k)))
    img = Image.new("L", (small, small), 0)
    draw = ImageDraw.Draw(img)
    for tri in np.asarray(triangles):
        draw.polygon([tuple(p) for p in xy[tri] * k], fill=255, outline=255)
    mask = binary_fill_holes(np.asarray(img) > 0)  # the mouth and eyes are holes of the mesh, not outline
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return boundary_loop(triangles), lambda pts: np.zeros(len(pts), bool)
    centre = (np.array([xs.mean(), ys.mean()]) + 0.5) / k
    pad = np.pad(mask, 3)
    xi = np.clip(np.round(xy[:, 0] * k).astype(int), 0, small - 1) + 3
    yi = np.clip(np.round(xy[:, 1] * k).astype(int), 0, small - 1) + 3
    on_edge = np.zeros(len(xy), bool)
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            if dx * dx + dy * dy <= 9:
                on_edge |= ~pad[yi + dy, xi + dx]
    used = np.unique(np.asarray(triangles))
    cand = used[on_edge[used]]
    # Per direction from the centre, the candidate farthest out is on the outline.
    ang = np.arctan2(xy[cand, 1] - centre[1], xy[cand, 0] - centre[0])
    dist = np.linalg.norm(xy[cand] - centre, axis=1)
    bins = np.floor((ang + np.pi) / (2 * np.pi) * 120).astype(int) % 120
    order = []
    for b in range(120):
        sel = np.flatnonzero(bins == b)
        if len(sel):
            order.append(cand[sel[np.argmax(dist[sel])]])
    order = np.asarray(list(dict.fromkeys(order)), np.int64)

    def covered(pts: np.ndarray) -> np.ndarray:
        """Which points [N,2] (crop pixels) lie on the face."""
        q = np.clip((pts * k).astype(int), 0, small - 1)
        return mask[q[:, 1], q[:, 0]]

    return (order if len(order) >= 8 else boundary_loop(triangles)), covered


def inside_polygon(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd ray casting: which of `pts` [N,2] lie inside polygon `poly` [M,2]."""
    x, y = pts[:, 0:1], pts[:, 1:2]
    x0, y0 = poly[:, 0][None], poly[:, 1][None]
    x1, y1 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    cond = (y0 > y) != (y1 > y)
    xint = x0 + (y - y0) * (x1 - x0) / np.where(y1 - y0 == 0, 1e-12, y1 - y0)
    return (cond & (x < xint)).sum(axis=1) % 2 == 1


def _strip(upper: tuple[int, ...], lower: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Triangles filling the hole between two contours that share their end points."""
    tris = []
    for i in range(len(upper) - 1):
        a, b, c, d = upper[i], upper[i + 1], lower[i + 1], lower[i]
        if a == d:
            tris.append((a, b, c))
        elif b == c:
            tris.append((a, b, d))
        else:
            tris += [(a, b, c), (a, c, d)]
    return tris


def rasterize_triangle_ids(verts: np.ndarray, tris: np.ndarray, size: int) -> np.ndarray:
    """Triangle id covering each pixel centre of a size x size image (nearest triangle fills gaps).

    Vectorised: triangles are grouped by the size of their bounding box and each group is
    tested on a [triangles, Sy, Sx] grid at once, at most ~2M pixels per pass (a Python loop
    over ~1000 triangles took 0.09 s per photo at 1024², holding the GIL the motion thread
    wanted).
    """
    v = verts[tris]  # [T,3,2]
    n_tris = len(tris)
    # Triangles folded over in the photo (at a turned face's silhouette) claim pixels last:
    # a pixel covered by a properly oriented triangle belongs to that one. Among the rest,
    # the first triangle in this order that covers a pixel takes it.
    cross = (v[:, 1, 0] - v[:, 0, 0]) * (v[:, 2, 1] - v[:, 0, 1]) - (v[:, 1, 1] - v[:, 0, 1]) * (v[:, 2, 0] - v[:, 0, 0])
    majority = np.sign(np.sum(np.sign(cross) * np.abs(cross))) or 1.0
    order = np.argsort(np.sign(cross) != majority, kind="stable")
    rank = np.empty(n_tris, np.int64)
    rank[order] = np.arange(n_tris)
    ax, ay, bx, by, cx, cy = (v[:, i, j] for i in range(3) for j in range(2))
    x0 = np.maximum(np.floor(np.minimum(np.minimum(ax, bx), cx) - 0.5), 0).astype(np.int64)
    x1 = np.minimum(np.ceil(np.maximum(np.maximum(ax, bx), cx)), size).astype(np.int64)
    y0 = np.maximum(np.floor(np.minimum(np.minimum(ay, by), cy) - 0.5), 0).astype(np.int64)
    y1 = np.minimum(np.ceil(np.maximum(np.maximum(ay, by), cy)), size).astype(np.int64)
    den = (by - cy) * (ax - cx) + (cx - bx) * (ay - cy)
    w, h = x1 - x0, y1 - y0
    ok = (w > 0) & (h > 0) & (np.abs(den) >= 1e-9)
    # Groups of similar bounding boxes (sides rounded up to steps of 2^(1/3)), each tested on
    # a [triangles, Sy, Sx] grid of its largest box: ~1.3x the pixels of the boxes themselves.
    step = lambda a: np.ceil(3 * np.log2(np.maximum(a, 1))).astype(np.int64)  # noqa: E731
    key = step(w) * 64 + step(h)
    best = np.full(size * size, n_tris, np.int64)  # lowest rank covering each pixel
    for k in np.unique(key[ok]):
        members = np.flatnonzero(ok & (key == k))
        sx, sy = int(w[members].max()), int(h[members].max())
        for grp in np.array_split(members, -(-len(members) * sx * sy // (1 << 21))):
            g = lambda a: a[grp, None, None]  # noqa: E731 - per-triangle values against the grid
            ix, iy = g(x0) + np.arange(sx)[None, None, :], g(y0) + np.arange(sy)[None, :, None]
            px, py = ix + 0.5, iy + 0.5
            l0 = ((g(by) - g(cy)) * (px - g(cx)) + (g(cx) - g(bx)) * (py - g(cy))) / g(den)
            l1 = ((g(cy) - g(ay)) * (px - g(cx)) + (g(ax) - g(cx)) * (py - g(cy))) / g(den)
            inside = (l0 >= -1e-6) & (l1 >= -1e-6) & (1 - l0 - l1 >= -1e-6) & (ix < g(x1)) & (iy < g(y1))
            t, r, c = np.nonzero(inside)
            np.minimum.at(best, iy[t, r, 0] * size + ix[t, 0, c], rank[grp][t])
    out = np.where(best < n_tris, order[np.minimum(best, n_tris - 1)], -1).reshape(size, size)
    missing = out < 0
    if missing.any():
        from scipy.ndimage import distance_transform_edt

        # Gaps are thin slivers along the face's outline: fill them from the nearest covered
        # pixel, searched in the box around them (the whole image only if one is far from any).
        ys, xs = np.nonzero(missing)
        m = 16
        y0, y1, x0, x1 = max(ys.min() - m, 0), min(ys.max() + m + 1, size), max(xs.min() - m, 0), min(xs.max() + m + 1, size)
        dist, (iy, ix) = distance_transform_edt(missing[y0:y1, x0:x1], return_indices=True)
        if dist.max() <= m:
            out[y0:y1, x0:x1] = out[y0:y1, x0:x1][iy, ix]
        else:
            _, (iy, ix) = distance_transform_edt(missing, return_indices=True)
            out = out[iy, ix]
    return out


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


MIN_REST_OPEN = 0.05  # mouth widths: lips parted less than this in the photo already read as closed
LOWER_LIP_SHARE = 0.6  # of the photo's lip gap, closed by the lower lip rising (the rest: the upper lip)
SEAL_GAP = 0.02  # closed lips stay this share of the photo's gap apart: touching, yet no flat triangles
CLOSING_SPAN = 0.1  # mouth widths of jaw_open over which parted lips go from closed to the photo's opening


def _inner_gaps(p2: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Opening between each inner-lip pair, along the face's down axis (pixels; 0 at the corners)."""
    gaps = np.clip((p2[list(tp.INNER_LOWER)] - p2[list(tp.INNER_UPPER)]) @ down, 0.0, None)
    gaps[0] = gaps[-1] = 0.0  # the corners are shared points
    return gaps


def _closing_field(gaps: np.ndarray, u: np.ndarray, ny: np.ndarray, below_slit: np.ndarray, lip_top: np.ndarray,
                   jaw_w: np.ndarray, lateral: np.ndarray, down: np.ndarray, mesh_triangles: np.ndarray) -> np.ndarray:
    """Displacement [V,2] that closes the photo's parted lips (`gaps`: `_inner_gaps` of the photo).

    A portrait often smiles with its teeth showing; without this, its lips could never meet,
    neither on p/b/m nor at rest. Each inner-lip pair closes to within `SEAL_GAP` of its gap,
    the lower lip rising by `LOWER_LIP_SHARE` of it and the upper lip coming down by the rest.
    Every vertex takes the displacement of the inner lip at its place across the mouth
    (interpolated, zero at the corners and beyond), so each lip moves as one piece and lips
    of any shape meet along their whole length without crossing: fully within the lip
    bodies; below the lower lip as much as the jaw field moves it relative to the lip (the
    chin rises with the closing jaw); above the upper lip fading out within 6 % of the
    face height (the skin under the nose stretches a little).
    """
    close = (1 - SEAL_GAP) * gaps
    inner_u = u[list(tp.INNER_LOWER)]
    order = np.argsort(inner_u)
    along = np.interp(u, inner_u[order], close[order], left=0.0, right=0.0)
    lower = np.clip(jaw_w / np.maximum(lateral, 1e-3), 0.0, 1.0) * (below_slit > 0)
    upper = (below_slit == 0) * (1.0 - _smoothstep(lip_top - ny, 0.0, 0.06))
    amount = (-LOWER_LIP_SHARE * lower + (1 - LOWER_LIP_SHARE) * upper) * along
    amount[list(tp.INNER_LOWER)] = -LOWER_LIP_SHARE * close
    amount[list(tp.INNER_UPPER[1:-1])] = (1 - LOWER_LIP_SHARE) * close[1:-1]
    # Smooth between the lip contours and the still skin (as for the jaw field), so no
    # triangle near the corners tips over where neighbours would move unequally.
    pinned = np.zeros(468, bool)
    pinned[list(tp.INNER_UPPER + tp.INNER_LOWER + tp.OUTER_UPPER + tp.OUTER_LOWER)] = True
    pinned |= np.abs(u[:468]) > 1.6
    amount[:468] = _relax(amount[:468], mesh_triangles, pinned, iterations=12)
    return amount[:, None] * down[None]


def build_rig(landmarks: np.ndarray, mesh_triangles: np.ndarray, size: int) -> FaceRig:
    """Rig for a photo crop of `size` pixels whose FaceMesh points are `landmarks` [468,3] (crop pixels)."""
    from scipy.spatial import Delaunay

    lm = np.asarray(landmarks, np.float64)
    p2 = lm[:, :2]
    eye_r = p2[list(tp.RIGHT_EYE_UPPER + tp.RIGHT_EYE_LOWER)].mean(0)
    eye_l = p2[list(tp.LEFT_EYE_UPPER + tp.LEFT_EYE_LOWER)].mean(0)
    eye_mid = (eye_r + eye_l) / 2
    mouth_c = p2[list(tp.INNER_UPPER + tp.INNER_LOWER)].mean(0)
    chin = p2[tp.CHIN]
    down = chin - eye_mid
    face_h = float(np.linalg.norm(down))
    down /= face_h
    right = np.array([-down[1], down[0]])  # image-right for an upright face
    mouth_w = float(np.linalg.norm(p2[tp.MOUTH_CORNERS[0]] - p2[tp.MOUTH_CORNERS[1]]))

    # Rings outside the face's outline, and the fixed crop border.
    oval, on_face = face_outline(p2, np.asarray(mesh_triangles), size)
    oval_pts = p2[oval]
    centre = oval_pts.mean(0)
    sub = oval_pts[::2] if len(oval_pts) > 40 else oval_pts
    margin = 0.02 * size
    rings, ring_head, ring_jaw = [], [], []
    # Ring 1 (hair line, neck) moves with the head; ring 2 is static, so everything
    # beyond it (the background) is exactly the photo and only the band between the
    # rings stretches to absorb the motion.
    for k, w_above, w_below in ((1.2, 1.0, 0.55), (1.5, 0.0, 0.0)):
        pts = centre + k * (sub - centre)
        keep = np.all((pts > margin) & (pts < size - margin), axis=1)
        pts = pts[keep]
        below = ((pts - mouth_c) @ down) / face_h  # > 0 below the mouth
        w = w_above + (w_below - w_above) * _smoothstep(below, 0.2, 0.7)
        rings.append(pts)
        ring_head.append(w)
        ring_jaw.append(np.where(k < 1.5, 0.45, 0.0) * _smoothstep(below, 0.3, 0.5) * _smoothstep(-np.abs((pts - mouth_c) @ right) / face_h, -0.5, -0.2))
    n_side = 8
    t = np.linspace(0, size, n_side + 1)[:-1]
    border = np.concatenate([
        np.stack([t, np.zeros_like(t)], 1), np.stack([np.full_like(t, size), t], 1),
        np.stack([size - t, np.full_like(t, size)], 1), np.stack([np.zeros_like(t), size - t], 1)])
    outer_pts = np.concatenate([oval_pts] + rings + [border])
    outer_idx = np.concatenate([oval, 468 + np.arange(len(outer_pts) - len(oval))])
    dl = Delaunay(outer_pts)
    simp = dl.simplices
    outside = ~on_face(outer_pts[simp].mean(1))
    outer_tris = outer_idx[simp[outside]]

    hole_mouth = _strip(tp.INNER_UPPER, tp.INNER_LOWER)
    hole_eyes = _strip(tp.RIGHT_EYE_UPPER, tp.RIGHT_EYE_LOWER) + _strip(tp.LEFT_EYE_UPPER, tp.LEFT_EYE_LOWER)
    tris = np.concatenate([np.asarray(mesh_triangles, np.int64), outer_tris, np.asarray(hole_eyes), np.asarray(hole_mouth)])
    mouth_mask = np.zeros(len(tris), bool)
    mouth_mask[-len(hole_mouth):] = True
    lid_mask = np.zeros(len(tris), bool)
    lid_mask[-len(hole_mouth) - len(hole_eyes):-len(hole_mouth)] = True

    ring_pts = np.concatenate(rings) if rings else np.zeros((0, 2))
    n_ring = len(ring_pts)
    verts2 = np.concatenate([p2, ring_pts, border])
    V = len(verts2)
    # Depth for ring points: that of the nearest oval point (the head's silhouette).
    near = np.argmin(((ring_pts[:, None] - oval_pts[None]) ** 2).sum(-1), axis=1) if n_ring else np.zeros(0, int)
    # A height field over the image: a point hidden behind the surface in front of it (far side
    # of a turned nose) takes that surface's depth, and later all of its motion (FoldGuard).
    front_z, cover, cover_w = front_surface(p2, lm[:, 2], np.asarray(mesh_triangles))
    z_face = np.minimum(lm[:, 2].astype(np.float64), front_z)
    # Lips and lids are left out: closed, they overlap each other in the picture (the lower lip
    # tucked behind the upper one) yet each must keep its own motion.
    own = np.zeros(468, bool)
    own[list(tp.OUTER_UPPER + tp.OUTER_LOWER + tp.INNER_UPPER + tp.INNER_LOWER + tp.RIGHT_EYE_UPPER
             + tp.RIGHT_EYE_LOWER + tp.LEFT_EYE_UPPER + tp.LEFT_EYE_LOWER)] = True
    hidden = np.flatnonzero((front_z < lm[:, 2] - HIDDEN_MARGIN * face_h) & ~own)
    z = np.concatenate([z_face, z_face[oval][near], np.zeros(len(border))])
    head_w = np.concatenate([np.ones(468), np.concatenate(ring_head) if n_ring else np.zeros(0), np.zeros(len(border))])
    z = bounded_depth(verts2, z, tris[~mouth_mask], head_w > 0)
    verts = np.concatenate([verts2, z[:, None]], axis=1)

    # Face-frame coordinates: nx across, ny down, in face heights, origin at the mouth centre.
    rel = verts2 - mouth_c
    nx, ny = rel @ right / face_h, rel @ down / face_h
    ny_corner = float(((p2[list(tp.MOUTH_CORNERS)] - mouth_c) @ down).mean() / face_h)
    # Lateral position in units of the inner mouth half-width (1 at the inner corners,
    # where the lips part): the opening profile is shaped against that span.
    half_w = float(np.linalg.norm(p2[tp.INNER_CORNERS[0]] - p2[tp.INNER_CORNERS[1]])) / 2
    u = (rel @ right) / max(half_w, 1e-3)
    # The jaw field: everything under the mouth slit moves with the jaw (the lower lip
    # fully, the chin a little less as the lip rolls down), fading sideways toward the
    # jaw angles and, beside the mouth, upward into the cheeks. The upper lip and all
    # above stay. Contour points are classified explicitly: in a closed mouth the
    # inner lips coincide, so geometry alone cannot tell upper from lower.
    d = np.abs(u)
    # Opening profile across the mouth: round toward the corners (which open little), then
    # a slow fade into the cheeks beyond them.
    corner_w = 0.12
    lateral = np.where(d <= 1.0, corner_w + (1 - corner_w) * np.clip(1.0 - d ** 2, 0, 1) ** 0.7,
                       corner_w * np.exp(-(((d - 1.0) / 1.4) ** 2)))
    inner_u = np.concatenate([u[list(tp.INNER_UPPER)], u[list(tp.INNER_LOWER)]])
    inner_ny = np.concatenate([ny[list(tp.INNER_UPPER)], ny[list(tp.INNER_LOWER)]])
    order = np.argsort(inner_u)
    slit = np.interp(u, inner_u[order], inner_ny[order])
    # The photo's own lip opening at the centre (mouth widths); lips parted less read as closed.
    gaps = _inner_gaps(p2, down)
    rest_open = float(np.median(gaps[3:8])) / mouth_w
    parted = rest_open >= MIN_REST_OPEN
    if parted:
        # One line through both contours' points would zigzag between them and put parts of
        # the upper lip below it; run it midway between the two lips instead.
        def contour_ny(c):
            k = np.argsort(u[list(c)])
            return np.interp(u, u[list(c)][k], ny[list(c)][k])

        slit = (contour_ny(tp.INNER_UPPER) + contour_ny(tp.INNER_LOWER)) / 2
    ny_chin = float(((p2[tp.CHIN] - mouth_c) @ down) / face_h)
    ny_outer_low = float(((p2[17] - mouth_c) @ down) / face_h)
    roll_off = 1.0 - 0.2 * _smoothstep(ny, ny_outer_low, ny_chin)
    below_slit = (ny > slit).astype(np.float64)
    cheek = _smoothstep(ny, ny_corner - 0.02, ny_corner + 0.15)
    side = _smoothstep(d, 1.0, 1.6)
    # Below the lower lip the sideways fade follows the jaw, not the mouth: the whole chin drops.
    lateral_chin = 1.0 - 0.85 * _smoothstep(np.abs(nx), 0.2, 0.7)
    to_chin = _smoothstep(ny, ny_outer_low, ny_outer_low + 0.08)
    lateral_jaw = (1 - to_chin) * lateral + to_chin * np.maximum(lateral_chin, lateral)
    jaw_w = ((1 - side) * below_slit + side * cheek) * roll_off * lateral_jaw
    for idx in tp.OUTER_UPPER + tp.INNER_UPPER:
        jaw_w[idx] = 0.0
    for idx in tp.OUTER_LOWER + tp.INNER_LOWER:
        jaw_w[idx] = lateral[idx]
    # Relax the field over the mesh (lip contours and the upper face pinned): a weight
    # that jumps between neighbouring vertices would fold triangles near the corners.
    pinned = np.zeros(468, bool)
    pinned[list(tp.OUTER_UPPER + tp.INNER_UPPER + tp.OUTER_LOWER + tp.INNER_LOWER)] = True
    pinned |= (below_slit[:468] == 0) & (d[:468] < 1.0)
    # The lower lip's body (between its inner and outer contours) moves as one piece.
    lo_u, lo_ny = u[list(tp.OUTER_LOWER)], ny[list(tp.OUTER_LOWER)]
    order = np.argsort(lo_u)
    lip_bottom = np.interp(u, lo_u[order], lo_ny[order])
    body = (below_slit[:468] > 0) & (ny[:468] <= lip_bottom[:468] + 1e-6) & (d[:468] < 1.3)
    jaw_w[:468][body] = lateral[:468][body]
    pinned |= body
    jaw_w[:468] = _relax(jaw_w[:468], np.asarray(mesh_triangles), pinned, iterations=12)
    # Upper lip: lifts a little as a whole, fading up toward the nose and sideways.
    lateral_up = np.where(d <= 1.0, 1.0 - 0.7 * d ** 2, 0.3 * np.exp(-(((d - 1.0) / 0.5) ** 2)))
    outer_u, outer_ny = u[list(tp.OUTER_UPPER)], ny[list(tp.OUTER_UPPER)]
    order = np.argsort(outer_u)
    lip_top = np.interp(u, outer_u[order], outer_ny[order])
    up_profile = 1.0 - _smoothstep(lip_top - ny, 0.0, 0.12)
    upper_w = (1.0 - below_slit) * up_profile * lateral_up
    upper_w[468:] = 0.0
    for idx in tp.OUTER_LOWER + tp.INNER_LOWER:
        upper_w[idx] = 0.0
    for idx in tp.OUTER_UPPER + tp.INNER_UPPER:
        upper_w[idx] = lateral_up[idx]
    for idx in tp.MOUTH_CORNERS + tp.INNER_CORNERS:
        jaw_w[idx], upper_w[idx] = corner_w, 0.0
    jaw_w[468:] = 0.0
    if n_ring:
        jaw_w[468:468 + n_ring] = np.concatenate(ring_jaw)
    # Jaw opening moves the lower face down; the upper lip lifts a little.
    jaw_dir = jaw_w[:, None] * down[None] * mouth_w - 0.12 * upper_w[:, None] * down[None] * mouth_w
    if parted:
        close_dir = _closing_field(gaps, u, ny, below_slit, lip_top, jaw_w, lateral, down, np.asarray(mesh_triangles))
    else:
        close_dir, rest_open = np.zeros((V, 2)), 0.0

    # Lip width: stretch sideways around the mouth centre, fading with distance.
    dist = np.sqrt(nx ** 2 + (ny * 1.6) ** 2)
    width_fall = np.exp(-((dist / (0.55 * mouth_w / face_h)) ** 2))
    lip_width_dir = (rel @ right)[:, None] * right[None] * width_fall[:, None]
    lip_width_dir[468:] = 0.0

    # Pucker (oo, w): the lips gather toward the centre and bulge a little, so the opening
    # narrows and rounds. Tuck (f, v): the lower lip rises under the upper teeth.
    pucker_dir = -0.3 * lip_width_dir
    lip_lat = np.clip(1.0 - d ** 2, 0.0, 1.0)
    for idx in tp.OUTER_UPPER + tp.INNER_UPPER:
        pucker_dir[idx] -= down * 0.035 * mouth_w * lip_lat[idx]
    for idx in tp.OUTER_LOWER + tp.INNER_LOWER:
        pucker_dir[idx] += down * 0.035 * mouth_w * lip_lat[idx]
    lower_body = np.zeros(V, bool)
    lower_body[:468] = body
    lower_body[list(tp.OUTER_LOWER + tp.INNER_LOWER)] = True
    tuck_dir = np.zeros((V, 2))
    tuck_dir[lower_body] = -down * 0.07 * mouth_w * lateral[lower_body, None]

    # Blink: upper lids close onto the lower lids; the fold above follows partly.
    blink_dir = np.zeros((V, 2))
    for upper, lower, fold in ((tp.RIGHT_EYE_UPPER, tp.RIGHT_EYE_LOWER, tp.RIGHT_LID_FOLD),
                               (tp.LEFT_EYE_UPPER, tp.LEFT_EYE_LOWER, tp.LEFT_LID_FOLD)):
        for a, b in zip(upper[1:-1], lower[1:-1]):
            # The lids stop a hair apart: the squeezed eye becomes the dark lash line,
            # and the triangles between the lids stay non-degenerate for the warp.
            blink_dir[a] = 0.8 * (p2[b] - p2[a])
            blink_dir[b] = 0.08 * (p2[a] - p2[b])
        mids = np.array(upper[1:-1])
        for f in fold:
            nearest = mids[np.argmin(((p2[mids] - p2[f]) ** 2).sum(-1))]
            blink_dir[f] = 0.45 * blink_dir[nearest]

    # Brow raise: brows lift, the lid folds and the forehead above follow partly.
    brow_dir = np.zeros((V, 2))
    lift = -down * 0.045 * face_h
    brow_idx = list(tp.RIGHT_BROW + tp.LEFT_BROW)
    brow_ny = ny[brow_idx].mean()
    for i in range(468):
        if i in brow_idx:
            brow_dir[i] = lift
        elif ny[i] < brow_ny - 0.02:  # forehead
            brow_dir[i] = lift * 0.6 * (1 - _smoothstep(brow_ny - ny[i], 0.15, 0.5))
    for f in tp.RIGHT_LID_FOLD + tp.LEFT_LID_FOLD:
        brow_dir[f] = lift * 0.35

    pivot = np.array([centre[0], centre[1] + 0.25 * face_h, float(lm[:, 2].mean()) + 0.6 * face_h])
    # Nor does a point that the jaw or the lips move much follow the surface in front of it.
    hidden = hidden[(np.abs(jaw_w[hidden]) < 0.25) & (upper_w[hidden] < 0.25) & ~lower_body[hidden]]
    tri_map = rasterize_triangle_ids(verts2, tris, size)
    moving = (head_w > 0) | np.any([np.abs(d).sum(1) > 0 for d in (jaw_dir, close_dir, lip_width_dir, blink_dir, brow_dir,
                                                                   pucker_dir, tuck_dir)], axis=0)
    f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return FaceRig(
        size=size, vertices=f32(verts), triangles=torch.as_tensor(tris, dtype=torch.int64),
        mouth_triangles=torch.as_tensor(mouth_mask), head_weight=f32(head_w), jaw_dir=f32(jaw_dir),
        close_dir=f32(close_dir), rest_open=rest_open,
        lip_width_dir=f32(lip_width_dir), blink_dir=f32(blink_dir), brow_dir=f32(brow_dir),
        pucker_dir=f32(pucker_dir), tuck_dir=f32(tuck_dir), pivot=f32(pivot),
        face_height=face_h, mouth_width=mouth_w, down=f32(down), tri_map=torch.as_tensor(tri_map),
        moving_vertices=torch.as_tensor(moving), guard=FoldGuard.build(verts2, tris, mouth_mask, lid_mask, moving, hidden,
                                                                  np.asarray(mesh_triangles)[cover[hidden]], cover_w[hidden]),
    )
