"""The rig's motion fields: how far each vertex moves per unit of each motion channel.

One builder per channel of `types.CHANNELS` that the rig moves by a field (jaw_open,
lip_width, pucker, lip_tuck, blink, brow_raise), plus the field that closes a photo's
parted lips. All are shaped in the face's own frame (`mesh.FaceAxes`): `MouthLayout`
says where each vertex sits around the mouth, so a field is a few lines of weights.
The per-frame deformation is then a few batched multiply-adds (`deform.py`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import topology as tp

if TYPE_CHECKING:
    from .mesh import FaceAxes

def smoothstep(x: np.ndarray, a: float, b: float) -> np.ndarray:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def relax(values: np.ndarray, triangles: np.ndarray, pinned: np.ndarray, iterations: int) -> np.ndarray:
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


MIN_REST_OPEN = 0.05  # mouth widths: lips parted less than this in the photo already read as closed
LOWER_LIP_SHARE = 0.6  # of the photo's lip gap, closed by the lower lip rising (the rest: the upper lip)
SEAL_GAP = 0.02  # closed lips stay this share of the photo's gap apart: touching, yet no flat triangles
CLOSING_SPAN = 0.1  # mouth widths of jaw_open over which parted lips go from closed to the photo's opening


def inner_gaps(p2: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Opening between each inner-lip pair, along the face's down axis (pixels; 0 at the corners)."""
    gaps = np.clip((p2[list(tp.INNER_LOWER)] - p2[list(tp.INNER_UPPER)]) @ down, 0.0, None)
    gaps[0] = gaps[-1] = 0.0  # the corners are shared points
    return gaps


def closing_field(axes: "FaceAxes", m: "MouthLayout", jaw_w: np.ndarray, mesh_triangles: np.ndarray) -> np.ndarray:
    """Displacement [V,2] that closes the photo's parted lips (zeros where they read as closed).

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
    if not m.parted:
        return np.zeros((len(m.u), 2))
    u, ny, lateral, below_slit = m.u, m.ny, m.lateral, m.below_slit
    close = (1 - SEAL_GAP) * m.gaps
    inner_u = u[list(tp.INNER_LOWER)]
    order = np.argsort(inner_u)
    along = np.interp(u, inner_u[order], close[order], left=0.0, right=0.0)
    lower = np.clip(jaw_w / np.maximum(lateral, 1e-3), 0.0, 1.0) * (below_slit > 0)
    upper = (below_slit == 0) * (1.0 - smoothstep(m.lip_top - ny, 0.0, 0.06))
    amount = (-LOWER_LIP_SHARE * lower + (1 - LOWER_LIP_SHARE) * upper) * along
    amount[list(tp.INNER_LOWER)] = -LOWER_LIP_SHARE * close
    amount[list(tp.INNER_UPPER[1:-1])] = (1 - LOWER_LIP_SHARE) * close[1:-1]
    # Smooth between the lip contours and the still skin (as for the jaw field), so no
    # triangle near the corners tips over where neighbours would move unequally.
    pinned = np.zeros(468, bool)
    pinned[list(tp.INNER_UPPER + tp.INNER_LOWER + tp.OUTER_UPPER + tp.OUTER_LOWER)] = True
    pinned |= np.abs(u[:468]) > 1.6
    amount[:468] = relax(amount[:468], np.asarray(mesh_triangles), pinned, iterations=12)
    return amount[:, None] * axes.down[None]


CORNER_W = 0.12  # share of the jaw's opening at the inner lip corners (they open little)


@dataclass
class MouthLayout:
    """Where each rig vertex sits around the mouth, in the face's frame.

    nx across and ny down in face heights, origin at the mouth centre; u across in units
    of the inner mouth half-width (1 at the inner corners, where the lips part), against
    which the opening profile is shaped.
    """

    rel: np.ndarray  # [V, 2] pixels from the mouth centre
    nx: np.ndarray  # [V]
    ny: np.ndarray  # [V]
    u: np.ndarray  # [V]
    lateral: np.ndarray  # [V] opening profile across the mouth: round toward the corners, fading into the cheeks
    below_slit: np.ndarray  # [V] 1 below the line where the lips part, else 0
    lip_top: np.ndarray  # [V] ny of the upper lip's outer contour at each vertex's u
    body: np.ndarray  # [468] bool: the lower lip's body, between its inner and outer contours
    gaps: np.ndarray  # the photo's opening at each inner-lip pair (inner_gaps)
    rest_open: float  # the photo's own lip opening at the centre, mouth widths (0 when it reads as closed)
    ny_corner: float  # ny of the outer mouth corners

    @property
    def d(self) -> np.ndarray:
        return np.abs(self.u)

    @property
    def parted(self) -> bool:
        return self.rest_open > 0

    def lower_lip(self) -> np.ndarray:
        """[V] bool: the lower lip's body and contours."""
        lower = np.zeros(len(self.u), bool)
        lower[:468] = self.body
        lower[list(tp.OUTER_LOWER + tp.INNER_LOWER)] = True
        return lower

    @classmethod
    def of(cls, axes: "FaceAxes", xy: np.ndarray) -> "MouthLayout":
        p2, down, right, face_h, mouth_w = axes.p2, axes.down, axes.right, axes.face_h, axes.mouth_w
        rel = xy - axes.mouth_c
        nx, ny = rel @ right / face_h, rel @ down / face_h
        ny_corner = float(((p2[list(tp.MOUTH_CORNERS)] - axes.mouth_c) @ down).mean() / face_h)
        half_w = float(np.linalg.norm(p2[tp.INNER_CORNERS[0]] - p2[tp.INNER_CORNERS[1]])) / 2
        u = (rel @ right) / max(half_w, 1e-3)
        d = np.abs(u)
        # Opening profile across the mouth: round toward the corners (which open little), then
        # a slow fade into the cheeks beyond them.
        lateral = np.where(d <= 1.0, CORNER_W + (1 - CORNER_W) * np.clip(1.0 - d ** 2, 0, 1) ** 0.7,
                           CORNER_W * np.exp(-(((d - 1.0) / 1.4) ** 2)))
        inner_u = np.concatenate([u[list(tp.INNER_UPPER)], u[list(tp.INNER_LOWER)]])
        inner_ny = np.concatenate([ny[list(tp.INNER_UPPER)], ny[list(tp.INNER_LOWER)]])
        order = np.argsort(inner_u)
        slit = np.interp(u, inner_u[order], inner_ny[order])
        # The photo's own lip opening at the centre (mouth widths); lips parted less read as closed.
        gaps = inner_gaps(p2, down)
        rest_open = float(np.median(gaps[3:8])) / mouth_w
        if rest_open >= MIN_REST_OPEN:
            # One line through both contours' points would zigzag between them and put parts of
            # the upper lip below it; run it midway between the two lips instead.
            def contour_ny(c):
                k = np.argsort(u[list(c)])
                return np.interp(u, u[list(c)][k], ny[list(c)][k])

            slit = (contour_ny(tp.INNER_UPPER) + contour_ny(tp.INNER_LOWER)) / 2
        else:
            rest_open = 0.0
        below_slit = (ny > slit).astype(np.float64)
        lo_u, lo_ny = u[list(tp.OUTER_LOWER)], ny[list(tp.OUTER_LOWER)]
        order = np.argsort(lo_u)
        lip_bottom = np.interp(u, lo_u[order], lo_ny[order])
        body = (below_slit[:468] > 0) & (ny[:468] <= lip_bottom[:468] + 1e-6) & (d[:468] < 1.3)
        outer_u, outer_ny = u[list(tp.OUTER_UPPER)], ny[list(tp.OUTER_UPPER)]
        order = np.argsort(outer_u)
        lip_top = np.interp(u, outer_u[order], outer_ny[order])
        return cls(rel=rel, nx=nx, ny=ny, u=u, lateral=lateral, below_slit=below_slit, lip_top=lip_top, body=body,
                   gaps=gaps, rest_open=rest_open, ny_corner=ny_corner)


def jaw_weights(axes: "FaceAxes", m: MouthLayout, mesh_triangles: np.ndarray, ring_jaw: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex share of the jaw's drop and of the upper lip's lift, [V] each.

    Everything under the mouth slit moves with the jaw (the lower lip fully, the chin a
    little less as the lip rolls down), fading sideways toward the jaw angles and, beside
    the mouth, upward into the cheeks. The upper lip and all above stay. Contour points are
    classified explicitly: in a closed mouth the inner lips coincide, so geometry alone
    cannot tell upper from lower. `ring_jaw`: the head ring's own share (neck under the chin).
    """
    p2, down, face_h = axes.p2, axes.down, axes.face_h
    nx, ny, d, lateral, below_slit = m.nx, m.ny, m.d, m.lateral, m.below_slit
    ny_chin = float(((p2[tp.CHIN] - axes.mouth_c) @ down) / face_h)
    ny_outer_low = float(((p2[17] - axes.mouth_c) @ down) / face_h)
    roll_off = 1.0 - 0.2 * smoothstep(ny, ny_outer_low, ny_chin)
    cheek = smoothstep(ny, m.ny_corner - 0.02, m.ny_corner + 0.15)
    side = smoothstep(d, 1.0, 1.6)
    # Below the lower lip the sideways fade follows the jaw, not the mouth: the whole chin drops.
    lateral_chin = 1.0 - 0.85 * smoothstep(np.abs(nx), 0.2, 0.7)
    to_chin = smoothstep(ny, ny_outer_low, ny_outer_low + 0.08)
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
    jaw_w[:468][m.body] = lateral[:468][m.body]
    pinned |= m.body
    jaw_w[:468] = relax(jaw_w[:468], np.asarray(mesh_triangles), pinned, iterations=12)
    # Upper lip: lifts a little as a whole, fading up toward the nose and sideways.
    lateral_up = np.where(d <= 1.0, 1.0 - 0.7 * d ** 2, 0.3 * np.exp(-(((d - 1.0) / 0.5) ** 2)))
    up_profile = 1.0 - smoothstep(m.lip_top - ny, 0.0, 0.12)
    upper_w = (1.0 - below_slit) * up_profile * lateral_up
    upper_w[468:] = 0.0
    for idx in tp.OUTER_LOWER + tp.INNER_LOWER:
        upper_w[idx] = 0.0
    for idx in tp.OUTER_UPPER + tp.INNER_UPPER:
        upper_w[idx] = lateral_up[idx]
    for idx in tp.MOUTH_CORNERS + tp.INNER_CORNERS:
        jaw_w[idx], upper_w[idx] = CORNER_W, 0.0
    jaw_w[468:] = 0.0
    jaw_w[468:468 + len(ring_jaw)] = ring_jaw
    return jaw_w, upper_w


def jaw_open_field(axes: "FaceAxes", jaw_w: np.ndarray, upper_w: np.ndarray) -> np.ndarray:
    """[V, 2] per unit jaw_open (pixels per mouth width): the lower face drops, the upper lip lifts a little."""
    down, mouth_w = axes.down, axes.mouth_w
    return jaw_w[:, None] * down[None] * mouth_w - 0.12 * upper_w[:, None] * down[None] * mouth_w


def lip_width_field(axes: "FaceAxes", m: MouthLayout) -> np.ndarray:
    """[V, 2] per unit relative mouth-width change: a sideways stretch about the mouth centre, fading with distance."""
    dist = np.sqrt(m.nx ** 2 + (m.ny * 1.6) ** 2)
    width_fall = np.exp(-((dist / (0.55 * axes.mouth_w / axes.face_h)) ** 2))
    field = (m.rel @ axes.right)[:, None] * axes.right[None] * width_fall[:, None]
    field[468:] = 0.0
    return field


def pucker_field(axes: "FaceAxes", m: MouthLayout, lip_width: np.ndarray) -> np.ndarray:
    """[V, 2] for fully rounded lips (oo, w): they gather toward the centre and bulge a little,
    so the opening narrows and rounds. `lip_width`: the lip_width field."""
    field = -0.3 * lip_width
    lip_lat = np.clip(1.0 - m.d ** 2, 0.0, 1.0)
    for idx in tp.OUTER_UPPER + tp.INNER_UPPER:
        field[idx] -= axes.down * 0.035 * axes.mouth_w * lip_lat[idx]
    for idx in tp.OUTER_LOWER + tp.INNER_LOWER:
        field[idx] += axes.down * 0.035 * axes.mouth_w * lip_lat[idx]
    return field


def lip_tuck_field(axes: "FaceAxes", m: MouthLayout) -> np.ndarray:
    """[V, 2] for the lower lip tucked under the upper teeth (f, v): the lower lip rises."""
    lower = m.lower_lip()
    field = np.zeros((len(m.u), 2))
    field[lower] = -axes.down * 0.07 * axes.mouth_w * m.lateral[lower, None]
    return field


def blink_field(axes: "FaceAxes", n_vertices: int) -> np.ndarray:
    """[V, 2] for fully closed eyes: the upper lids close onto the lower lids; the fold above follows partly."""
    p2 = axes.p2
    field = np.zeros((n_vertices, 2))
    for upper, lower, fold in ((tp.RIGHT_EYE_UPPER, tp.RIGHT_EYE_LOWER, tp.RIGHT_LID_FOLD),
                               (tp.LEFT_EYE_UPPER, tp.LEFT_EYE_LOWER, tp.LEFT_LID_FOLD)):
        for a, b in zip(upper[1:-1], lower[1:-1]):
            # The lids stop a hair apart: the squeezed eye becomes the dark lash line,
            # and the triangles between the lids stay non-degenerate for the warp.
            field[a] = 0.8 * (p2[b] - p2[a])
            field[b] = 0.08 * (p2[a] - p2[b])
        mids = np.array(upper[1:-1])
        for f in fold:
            nearest = mids[np.argmin(((p2[mids] - p2[f]) ** 2).sum(-1))]
            field[f] = 0.45 * field[nearest]
    return field


def brow_raise_field(axes: "FaceAxes", m: MouthLayout) -> np.ndarray:
    """[V, 2] for a full brow raise: the brows lift, the lid folds and the forehead above follow partly."""
    ny = m.ny
    field = np.zeros((len(ny), 2))
    lift = -axes.down * 0.045 * axes.face_h
    brow_idx = list(tp.RIGHT_BROW + tp.LEFT_BROW)
    brow_ny = ny[brow_idx].mean()
    for i in range(468):
        if i in brow_idx:
            field[i] = lift
        elif ny[i] < brow_ny - 0.02:  # forehead
            field[i] = lift * 0.6 * (1 - smoothstep(brow_ny - ny[i], 0.15, 0.5))
    for f in tp.RIGHT_LID_FOLD + tp.LEFT_LID_FOLD:
        field[f] = lift * 0.35
    return field
