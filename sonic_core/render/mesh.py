"""The rig's mesh: the photo's FaceMesh extended into triangles that cover the whole crop.

The 468 FaceMesh points cover only the face. To move the head and nothing else, the mesh
adds two rings outside the face's outline (hair/forehead/neck, then a static ring) and a
fixed ring on the crop border, triangulates everything, and closes the mouth and eye holes
with strips, so every output pixel belongs to exactly one triangle.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import topology as tp
from .depth import HIDDEN_MARGIN, bounded_depth, front_surface
from .fields import smoothstep


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


def strip(upper: tuple[int, ...], lower: tuple[int, ...]) -> list[tuple[int, int, int]]:
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
    over the triangles held the GIL that the motion thread wanted).
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


@dataclass(frozen=True)
class FaceAxes:
    """The photo's face frame that the mesh's rings and every motion field are shaped against."""

    p2: np.ndarray  # [468, 2] FaceMesh points, crop pixels
    mouth_c: np.ndarray  # [2] centre of the inner lip contours
    down: np.ndarray  # [2] unit vector from the eye midpoint toward the chin
    right: np.ndarray  # [2] image-right for an upright face
    face_h: float  # eye midpoint to chin, pixels
    mouth_w: float  # outer lip corner to corner, pixels

    @classmethod
    def of(cls, p2: np.ndarray) -> "FaceAxes":
        eye_r = p2[list(tp.RIGHT_EYE_UPPER + tp.RIGHT_EYE_LOWER)].mean(0)
        eye_l = p2[list(tp.LEFT_EYE_UPPER + tp.LEFT_EYE_LOWER)].mean(0)
        eye_mid = (eye_r + eye_l) / 2
        mouth_c = p2[list(tp.INNER_UPPER + tp.INNER_LOWER)].mean(0)
        down = p2[tp.CHIN] - eye_mid
        face_h = float(np.linalg.norm(down))
        down /= face_h
        right = np.array([-down[1], down[0]])
        mouth_w = float(np.linalg.norm(p2[tp.MOUTH_CORNERS[0]] - p2[tp.MOUTH_CORNERS[1]]))
        return cls(p2=p2, mouth_c=mouth_c, down=down, right=right, face_h=face_h, mouth_w=mouth_w)


@dataclass
class RigMesh:
    """Vertices (FaceMesh's 468, then the rings, then the crop border) and triangles of a rig."""

    xy: np.ndarray  # [V, 2] crop pixels
    z: np.ndarray  # [V] depth, bounded in slope (depth.bounded_depth)
    triangles: np.ndarray  # [T, 3] FaceMesh's, the outer ones, the eye strips, the mouth strip (last)
    mouth_mask: np.ndarray  # [T] bool: the strip closing the mouth hole
    lid_mask: np.ndarray  # [T] bool: the strips between the eyelids
    head_weight: np.ndarray  # [V] share of the rigid head motion
    ring_jaw: np.ndarray  # [n_ring] share of the jaw's motion of each ring vertex (neck under the chin)
    centre: np.ndarray  # [2] centre of the face's outline
    hidden: np.ndarray  # indices of FaceMesh points behind the surface in front of them (lips and lids never)
    cover: np.ndarray  # [468] the FaceMesh triangle in front of each point (-1 where none)
    cover_w: np.ndarray  # [468, 3] barycentric weights of each point in that triangle

    @property
    def n_ring(self) -> int:
        return len(self.ring_jaw)


def build_mesh(lm: np.ndarray, mesh_triangles: np.ndarray, size: int, axes: FaceAxes) -> RigMesh:
    """The rig's mesh for FaceMesh points `lm` [468, 3] (crop pixels) in a `size`-pixel crop."""
    from scipy.spatial import Delaunay

    p2, mouth_c, down, right, face_h = axes.p2, axes.mouth_c, axes.down, axes.right, axes.face_h
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
        w = w_above + (w_below - w_above) * smoothstep(below, 0.2, 0.7)
        rings.append(pts)
        ring_head.append(w)
        ring_jaw.append(np.where(k < 1.5, 0.45, 0.0) * smoothstep(below, 0.3, 0.5) * smoothstep(-np.abs((pts - mouth_c) @ right) / face_h, -0.5, -0.2))
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

    hole_mouth = strip(tp.INNER_UPPER, tp.INNER_LOWER)
    hole_eyes = strip(tp.RIGHT_EYE_UPPER, tp.RIGHT_EYE_LOWER) + strip(tp.LEFT_EYE_UPPER, tp.LEFT_EYE_LOWER)
    tris = np.concatenate([np.asarray(mesh_triangles, np.int64), outer_tris, np.asarray(hole_eyes), np.asarray(hole_mouth)])
    mouth_mask = np.zeros(len(tris), bool)
    mouth_mask[-len(hole_mouth):] = True
    lid_mask = np.zeros(len(tris), bool)
    lid_mask[-len(hole_mouth) - len(hole_eyes):-len(hole_mouth)] = True

    ring_pts = np.concatenate(rings) if rings else np.zeros((0, 2))
    n_ring = len(ring_pts)
    verts2 = np.concatenate([p2, ring_pts, border])
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
    return RigMesh(xy=verts2, z=z, triangles=tris, mouth_mask=mouth_mask, lid_mask=lid_mask, head_weight=head_w,
                   ring_jaw=np.concatenate(ring_jaw) if n_ring else np.zeros(0), centre=centre, hidden=hidden,
                   cover=cover, cover_w=cover_w)
