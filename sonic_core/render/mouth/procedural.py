"""The default mouth painter ('procedural'): a shaded mouth interior built from the face's own geometry.

What a viewer expects inside a speaking mouth (and what real talking-face video measures,
benchmarks/mouth_realism.py): mostly a dark, warm cavity; the edge of the upper incisors
just under the upper lip, more of them as the lip lifts; a dark gap to the lower teeth,
which the lower lip mostly hides; the tongue low in the opening on open vowels.

Layers, back to front, each a function of the pixel's place in a mouth frame (u across,
-1..1 between the inner corners as they sit on the skull; v down, in pixels):
  cavity       dark, darkest deep up under the teeth and toward the corners
  tongue       a dim lip-red dome rising from the lower lip when the mouth opens wide
  lower teeth  a sliver above the lower lip, centre only, riding the jaw
  upper teeth  hung from the skull along a 3-D arch through the rest inner upper lip, so
               head yaw and pitch foreshorten them like a real arch; each tooth its own
               width (incisors widest), rounded incisal corners with dark notches between,
               thin gaps, translucent darker edges, shade under the upper lip and falling
               off along the arch away from the camera
Then the lips' shadow on the interior, the photo's grain (fixed to the teeth, so it moves
with them and never shimmers) and its softness. The opening's edge is soft, the corners
taper into the lips, and where the lips meet nothing is painted (no stripe between closed lips).

A photo whose lips are parted (a smile showing teeth) keeps its own teeth: the upper row
moves with the skull, the lower row with the jaw, and the cavity opens between them.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .. import topology as tp
from ..contour import gaussian_blur, interp_rows, lips_box, pixel_grid, polygon_distance, sorted_knots
from .base import MouthGeometry, MouthSource
from .photo import PhotoMouth, seal_lips
from .style import estimate_palette, lab_to_srgb, srgb_to_lab

# Tooth boundaries along the upper arch, as fractions of the arc from the midline to the inner
# mouth corner: central incisor, lateral incisor, canine, premolars (the canine and premolars
# are seen ever more obliquely). Each tooth's share of light falls off along the arch.
ARCH_EDGES = (0.0, 0.30, 0.53, 0.76, 0.92, 1.08, 1.3)
TOOTH_LIGHT = (1.0, 0.94, 0.82, 0.64, 0.48, 0.35)
LOWER_EDGES = (0.0, 0.17, 0.34, 0.52, 0.72, 1.3)  # lower incisors are narrower
EDGE_BELOW_LIP = 0.02  # incisal edge below the rest upper lip line, mouth widths (at the midline)
EDGE_WITH_OPENING = 0.15  # more of the crown shows as the mouth opens (the upper lip retracts), per mouth width
TOOTH_HEIGHT = 0.2  # visible crown height, mouth widths (the gum line above it)
ARCH_DEPTH = 0.03  # the teeth sit this far behind the inner lip line, mouth widths


def _smooth(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return x * x * (3 - 2 * x)


def _arch_fractions(points: np.ndarray) -> np.ndarray:
    """Signed arc-length fraction of each point of a corner-to-corner polyline [11,3] from its
    middle point (index 5): -1 at the first corner, +1 at the last."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    mid = arc[5]
    return np.where(np.arange(len(points)) <= 5, (arc - mid) / max(mid, 1e-6), (arc - mid) / max(arc[-1] - mid, 1e-6))


class ProceduralPainter:
    """Default painter (`mouth_painter='procedural'`); see the module docstring."""

    def prepare(self, source: MouthSource) -> None:
        rig = source.rig
        dev = rig.vertices.device
        self.mw = float(rig.mouth_width)
        self.palette = estimate_palette(source.crop, source.landmarks, rig.mouth_width)
        self.noise = source.noise
        self.photo = (PhotoMouth.detect(source.image, rig.vertices, rig.mouth_width, min_gap=0.0)
                      if rig.rest_open > 0 else None)
        self.split = 1.0
        if self.photo is not None:
            skin = srgb_to_lab(self.palette.skin)
            self.split = _row_split(source.crop, self.photo, skin)
            self._cavity_from_photo(source.crop, skin)
        verts = rig.vertices.detach().cpu().numpy().astype(np.float64)
        up3, lo3 = verts[list(tp.INNER_UPPER)], verts[list(tp.INNER_LOWER)]
        down3 = np.array([*rig.down.cpu().numpy(), 0.0])
        back = np.array([0.0, 0.0, ARCH_DEPTH * self.mw])
        across = np.clip(1.0 - 0.45 * _arch_fractions(up3) ** 2, 0.0, 1.0)
        edge = up3 + back + (EDGE_BELOW_LIP * self.mw * across)[:, None] * down3
        gum = edge - TOOTH_HEIGHT * self.mw * down3
        # Skull-fixed points, carried with the head every frame: the inner corners (the mouth
        # frame), the arch's incisal edge and gum line, the rest lips (jaw travel, the photo's own gap).
        pts = np.concatenate([verts[list(tp.INNER_CORNERS)], edge, gum, lo3, up3])
        self._skull_pts = torch.as_tensor(pts, dtype=torch.float32, device=dev)
        self._rest_upper3 = rig.vertices[list(tp.INNER_UPPER)]
        self._arch = torch.as_tensor(_arch_fractions(up3), dtype=torch.float32, device=dev)
        d = verts[tp.MOUTH_CORNERS[1]] - verts[tp.MOUTH_CORNERS[0]]
        self._yaw0 = math.atan2(-d[2], d[0])  # the photo's own yaw, from the mouth line's depth
        gen = torch.Generator().manual_seed(1234)
        self._tooth_var = (1.0 + 0.05 * torch.randn(2, 16, generator=gen)).to(dev)
        self.feather = max(0.9, 1.3 * self.palette.softness)  # the lips' inner edge as soft as the photo's edges
        self.close_span = rig.close_span
        col = lambda c: c.to(dev).view(1, 3, 1)  # noqa: E731
        pal = self.palette
        self._teeth, self._cavity, self._deep = col(pal.teeth), col(pal.cavity), col(pal.deep)
        self._tongue, self._gum = col(pal.tongue), col(pal.gum)
        self._edges = torch.tensor(ARCH_EDGES, device=dev)
        self._lower_edges = torch.tensor(LOWER_EDGES, device=dev)
        self._light = torch.tensor(TOOTH_LIGHT, device=dev)

    def _cavity_from_photo(self, crop: np.ndarray, skin: np.ndarray) -> None:
        """An open mouth in the photo shows its own cavity: the synthesized one takes its colours."""
        photo = self.photo
        poly = torch.cat([photo.upper, photo.lower.flip(0)[1:-1]], dim=0).cpu().numpy()
        from ..mesh import inside_polygon

        x0, y0 = np.floor(poly.min(0)).astype(int)
        x1, y1 = np.ceil(poly.max(0)).astype(int)
        yy, xx = np.mgrid[max(y0, 0):min(y1, crop.shape[0]), max(x0, 0):min(x1, crop.shape[1])]
        pts = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)
        inside = inside_polygon(pts, poly)
        lab = srgb_to_lab(crop[yy.ravel()[inside], xx.ravel()[inside]].astype(np.float64) / 255.0)
        dark = lab[lab[:, 0] < 0.5 * skin[0]]
        if len(dark) < max(12, 0.1 * len(lab)):
            return
        light, deep = np.percentile(dark, 50, axis=0), np.percentile(dark, 10, axis=0)
        light[0], deep[0] = max(light[0], 0.2 * skin[0]), max(deep[0], 0.06 * skin[0])
        self.palette.cavity = torch.as_tensor(lab_to_srgb(light), dtype=torch.float32)
        self.palette.deep = torch.as_tensor(lab_to_srgb(deep), dtype=torch.float32)

    def paint(self, frames: torch.Tensor, offset: tuple[int, int], g: MouthGeometry) -> torch.Tensor:
        B, _, fh, fw = frames.shape
        ox, oy = offset
        dev = frames.device
        mw, pal = self.mw, self.palette
        tgt = g.tgt
        upper, lower = tgt[:, list(tp.INNER_UPPER)], tgt[:, list(tp.INNER_LOWER)]
        box = lips_box(tgt, offset, (fw, fh))
        if box is None:
            return frames
        x0, y0, x1, y1 = box
        px, py = pixel_grid(x0, y0, x1, y1, B, dev)
        h, w = y1 - y0, x1 - x0

        # Mouth frame from the inner corners as they sit on the skull (lip motion does not move it).
        sk = g.skull(self._skull_pts)
        cl, cr = sk[:, 0], sk[:, 1]
        mid = (cl + cr) / 2
        ex = cr - cl
        half = ex.norm(dim=-1, keepdim=True).clamp_min(1.0) / 2
        ex = ex / (2 * half)
        ey = torch.stack([-ex[:, 1], ex[:, 0]], -1)
        ey = torch.where((ey * g.rig.down[None]).sum(-1, keepdim=True) < 0, -ey, ey)

        def uv(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            d = p - mid[:, None]
            return (d * ex[:, None]).sum(-1) / half, (d * ey[:, None]).sum(-1)

        def curve(p: torch.Tensor) -> torch.Tensor:
            return interp_rows(pu, *sorted_knots(*uv(p)))

        pu, pv = uv(torch.stack([px, py], -1))
        v_up, v_low = curve(upper), curve(lower)
        edge_pts, gum_pts, rest_low, rest_up = sk[:, 2:13], sk[:, 13:24], sk[:, 24:35], sk[:, 35:46]
        v_edge, v_gum = curve(edge_pts), curve(gum_pts)
        gap = (v_low - v_up).clamp_min(0)
        cu, _ = uv(tgt[:, list(tp.INNER_CORNERS)])
        u_l, u_r = cu.amin(1, keepdim=True), cu.amax(1, keepdim=True)
        span = (u_r - u_l).clamp_min(1e-3)
        t_across = ((pu - u_l) / span * 2 - 1).clamp(-1, 1)  # -1..1 between the lips' own corners
        _, vl_c = uv(lower[:, 5:6])
        _, vu_c = uv(upper[:, 5:6])
        opening = ((vl_c - vu_c) / mw).clamp_min(0)  # [B,1] centre opening, mouth widths
        jaw_drop = (vl_c - uv(rest_low[:, 5:6])[1]).clamp_min(0)  # [B,1] pixels the lower lip moved down

        # Where along the arch each pixel looks (foreshortened by the head's yaw like the arch).
        arch_u, _ = uv(edge_pts)
        a = interp_rows(pu, *sorted_knots(arch_u, self._arch[None].expand(B, -1)))
        a = a + (pu - arch_u.amax(1, keepdim=True)).clamp_min(0) * 1.2 - (arch_u.amin(1, keepdim=True) - pu).clamp_min(0) * 1.2
        aa = a.abs()
        yaw = g.head_rotation[:, 0:1] + self._yaw0
        facing = torch.cos((1.15 * a - yaw).clamp(-1.55, 1.55)).clamp_min(0.15)

        # Upper teeth: per tooth, rounded incisal corners and darker gaps.
        edges = self._edges
        k = torch.bucketize(aa, edges[1:-1])
        e0, e1 = edges[k], edges[k + 1]
        wt = ((aa - e0) / (e1 - e0)).clamp(0, 1)
        tooth_w_px = (e1 - e0) * half * 0.9 * facing
        notch = (0.012 * mw + 0.1 * tooth_w_px.clamp(max=0.03 * mw)) * (2 * wt - 1) ** 6
        v_tooth = v_edge + EDGE_WITH_OPENING * mw * opening - notch - 0.004 * mw * k.float()
        soft = max(0.5, 0.35 * self.feather)
        up_a = _smooth((v_tooth - pv) / soft + 0.5) * _smooth((1.25 - aa) / 0.15)
        bound_px = torch.minimum(wt, 1 - wt) * (e1 - e0) * half * facing  # distance to the tooth's edge
        gap_line = torch.exp(-(bound_px / max(0.45, 0.004 * mw)) ** 2)
        light = self._light[k] * (0.55 + 0.45 * facing)
        var = self._tooth_var[0][(k + 6 * (a > 0).long()).clamp(max=15)]
        under_lip = 0.7 + 0.3 * _smooth((pv - v_up) / (0.04 * mw))
        translucent = _smooth((v_tooth - pv) / (0.035 * mw))
        # Little light reaches the teeth through a narrow opening.
        up_shade = light * var * under_lip * (1 - 0.45 * gap_line) * (0.6 + 0.4 * _smooth(opening / 0.25))
        teeth, cav, deep = self._teeth, self._cavity, self._deep
        up_col = teeth * up_shade[:, None]
        up_col = up_col * (0.72 + 0.28 * translucent[:, None]) + cav * (0.28 * (1 - translucent))[:, None]
        gum_a = _smooth((v_gum - pv) / soft + 0.5)
        up_col = up_col * (1 - gum_a[:, None]) + self._gum * (0.7 * under_lip * gum_a)[:, None]

        # Lower teeth: the lower lip hides most of them; a sliver shows at the centre as the jaw drops.
        lo_edges = self._lower_edges
        kl = torch.bucketize(aa, lo_edges[1:-1])
        wl = ((aa - lo_edges[kl]) / (lo_edges[kl + 1] - lo_edges[kl])).clamp(0, 1)
        show = 0.055 * mw * (jaw_drop / (0.12 * mw)).clamp(0, 1)
        v_lo_edge = v_low - show * (1 - (t_across / 0.6) ** 2).clamp_min(0) + 0.006 * mw * (2 * wl - 1) ** 6
        lo_a = _smooth((pv - v_lo_edge) / soft + 0.5) * (show > 0.5).float()
        lo_shade = 0.9 * (0.55 + 0.45 * facing) * self._tooth_var[1][kl.clamp(max=15)]
        lo_gap = torch.exp(-((torch.minimum(wl, 1 - wl) * (lo_edges[kl + 1] - lo_edges[kl]) * half * facing)
                             / max(0.45, 0.004 * mw)) ** 2)
        lo_col = teeth * (lo_shade * (1 - 0.4 * lo_gap))[:, None]

        # Cavity: darkest up under the teeth at the back and in the corners, a little lighter low down.
        depth = ((pv - v_up) / gap.clamp_min(1.0)).clamp(0, 1)
        corner = _smooth((t_across.abs() - 0.5) / 0.5)
        cav_t = (0.15 + 0.85 * depth) * (1 - 0.8 * corner)
        interior = deep + (cav - deep) * cav_t[:, None]
        # The tongue: its back rises in the lower half of any real opening, lit from the front
        # (near the lower lip) and falling into shadow toward its top edge and the corners.
        tongue_top = v_low - gap * (0.55 - 0.2 * t_across ** 2)
        tongue_a = (_smooth((pv - tongue_top) / (0.05 * mw + self.feather)) * _smooth((0.9 - t_across.abs()) / 0.35)
                    * ((opening - 0.04) / 0.1).clamp(0, 1))
        tongue_lit = 0.4 + 0.5 * _smooth((pv - tongue_top) / (v_low - tongue_top).clamp_min(1.0) * 1.3)
        tongue_col = self._tongue * (tongue_lit * (1 - 0.55 * corner))[:, None]
        interior = interior * (1 - tongue_a[:, None]) + tongue_col * tongue_a[:, None]
        interior = interior * (1 - lo_a[:, None]) + lo_col * lo_a[:, None]
        if self.photo is None:
            interior = interior * (1 - up_a[:, None]) + up_col * up_a[:, None]
        else:
            interior = self._photo_teeth(interior, px, py, ey, g, jaw_drop)
        # The lips shade the interior near them; the corners sink into shadow.
        d_lo = (v_low - pv).clamp_min(0)
        occl = (0.3 + 0.7 * _smooth(d_lo / (0.04 * mw + self.feather))) * (1 - 0.45 * corner)
        interior = interior * occl[:, None]

        # The photo's grain, fixed to the teeth (moves with them, never shimmers), then its softness.
        S = self.noise.shape[0]
        nx = (px - mid[:, 0:1] + S / 2).round().long().clamp(0, S - 1)
        ny = (py - mid[:, 1:2] + S / 2).round().long().clamp(0, S - 1)
        interior = (interior + self.noise[ny, nx][:, None] * pal.grain).clamp(0, 1).view(B, 3, h, w)
        interior = gaussian_blur(interior, pal.softness)

        # Opening: soft edges along both lips, tapering at the corners; nothing where lips meet.
        # The photo's own lip line (closed lips are often a few pixels apart in FaceMesh) stays as it is.
        f = self.feather
        rest_gap = (curve(rest_low) - curve(rest_up)).clamp_min(0) if self.photo is None else torch.zeros_like(gap)
        alpha = (_smooth((pv - v_up) / f + 0.5) * _smooth((v_low - pv) / f + 0.5)
                 * _smooth((gap - rest_gap - 0.35 * f) / (1.2 * f)) * _smooth((1.0 - t_across.abs()) / 0.08))
        region = frames[:, :, y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        if self.photo is not None:
            self._seal(frames, offset, region, px, py, pu, pv, ey, v_up, v_low, tgt, g.jaw_open)
        a = alpha.view(B, 1, h, w)
        region.mul_(1 - a).add_(interior * a)
        return frames

    def _photo_teeth(self, interior, px, py, ey, g, jaw_drop):
        """The photo's own teeth over the synthesized cavity: the upper row with the skull, the
        lower row (below the dark line between the rows) with the jaw."""
        photo = self.photo
        B = px.shape[0]
        shift = g.skull(self._rest_upper3).mean(1) - photo.upper.mean(0)[None]
        S = photo.image.shape[-1]
        out = interior
        for part, drop in (("upper", None), ("lower", jaw_drop)):
            sx, sy = px - shift[:, 0:1], py - shift[:, 1:2]
            if drop is not None:
                sx, sy = sx - drop * ey[:, 0:1], sy - drop * ey[:, 1:2]
            poly = torch.cat([photo.upper, photo.lower.flip(0)[1:-1]], dim=0)[None].expand(B, -1, -1)
            dist, inside = polygon_distance(sx, sy, poly)
            alpha = ((torch.where(inside, dist, -dist) + 0.5 * self.feather) / self.feather).clamp(0, 1)
            ux, uy = sorted_knots(photo.upper[None, :, 0].expand(B, -1), photo.upper[None, :, 1].expand(B, -1))
            lx, ly = sorted_knots(photo.lower[None, :, 0].expand(B, -1), photo.lower[None, :, 1].expand(B, -1))
            y_up, y_lo = interp_rows(sx, ux, uy), interp_rows(sx, lx, ly)
            v_rel = (sy - y_up) / (y_lo - y_up).clamp_min(1.0)
            if part == "upper":
                # The lip lifted above the photo's lip line: more of the same teeth.
                above = (sy < y_up + 1.5) & (v_rel > -1.0)
                x_lo, x_hi = photo.upper[:, 0].min(), photo.upper[:, 0].max()
                across = ((sx - x_lo) / (x_hi - x_lo).clamp_min(1.0)).clamp(0, 1)
                above &= (across > 0.08) & (across < 0.92)
                alpha = torch.where(above, torch.ones_like(alpha), alpha)
                sy = torch.where(above, y_up + 1.5, sy)
                alpha = alpha * _smooth((self.split - v_rel) / 0.08 + 0.5)
                # The upper teeth shade the cavity just below them.
                below = (v_rel - self.split) * (y_lo - y_up).clamp_min(1.0)
                out = out * (0.35 + 0.65 * _smooth(below / (0.08 * self.mw)))[:, None]
            else:
                alpha = alpha * _smooth((v_rel - self.split) / 0.08 + 0.5)
            grid = torch.stack([sx, sy], -1)[:, None] * (2.0 / S) - 1.0
            colour = F.grid_sample(photo.image.expand(B, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                                   align_corners=False)[:, :, 0]
            out = out * (1 - alpha[:, None]) + colour * alpha[:, None]
        return out

    def _seal(self, frames, offset, region, px, py, pu, pv, ey, v_up, v_low, tgt, jaw_open) -> None:
        """Lips the rig closed over the photo's open mouth: cover their seam, in `region`, with lip texture."""
        B = px.shape[0]
        poly = torch.cat([tgt[:, list(tp.INNER_UPPER)], tgt[:, list(tp.INNER_LOWER)].flip(1)[:, 1:-1]], dim=1)
        dist, _ = polygon_distance(px, py, poly)
        closing = (1.0 - jaw_open / max(self.close_span, 1e-6)).clamp(0, 1)  # as the rig closes them (deform)
        thickness = ((tgt[:, tp.UPPER_LIP_MID] - tgt[:, tp.OUTER_UPPER[5]]).norm(dim=-1),
                     (tgt[:, tp.OUTER_LOWER[5]] - tgt[:, tp.LOWER_LIP_MID]).norm(dim=-1))
        seal, wgt = seal_lips(frames, offset, px, py, ey, pv, pu, v_up, v_low, dist, closing, self.mw,
                              self.feather, thickness)
        h, w = region.shape[-2:]
        region.mul_(1 - wgt.view(B, 1, h, w)).add_(seal.view(B, 3, h, w) * wgt.view(B, 1, h, w))


def _row_split(crop: np.ndarray, photo: PhotoMouth, skin: np.ndarray) -> float:
    """Where, between the photo's inner lips (0 = upper, 1 = lower), the upper teeth end.

    Rows across the middle of the opening are sorted into teeth (most pixels at least 0.78
    of the cheeks' L*), cavity (darker than half the cheeks') or neither (lip or tongue;
    FaceMesh's inner contour on a smile runs inside the upper lip). Upper teeth followed by
    cavity: the jaw's part starts at the cavity. Only teeth: the rows are together, all of it
    stays with the skull (1.0). No teeth in the upper half (an open mouth showing its tongue or
    lower teeth): nearly all of it follows the jaw.
    """
    up = photo.upper.detach().cpu().numpy()
    lo = photo.lower.detach().cpu().numpy()
    ts = np.linspace(0.05, 0.95, 19)
    h, w = crop.shape[:2]
    teeth, cavity = [], []
    for t in ts:
        pts = np.linspace(up[2], up[8], 9) * (1 - t) + np.linspace(lo[2], lo[8], 9) * t
        xi, yi = np.clip(pts[:, 0].round().astype(int), 0, w - 1), np.clip(pts[:, 1].round().astype(int), 0, h - 1)
        lab = srgb_to_lab(crop[yi, xi].astype(np.float64) / 255.0)
        bright = lab[:, 0] >= 0.78 * skin[0]
        dark = lab[:, 0] < 0.5 * skin[0]
        teeth.append(bright.mean() >= 0.5)
        cavity.append(dark.mean() >= 0.5 and t >= 0.3)
    teeth, cavity = np.asarray(teeth), np.asarray(cavity)
    if photo.gap < 4 or not teeth.any():
        return 0.12
    first = int(np.argmax(teeth))
    if ts[first] >= 0.6 and cavity[:first].any():
        return 0.12
    after = np.flatnonzero(cavity[first:])
    return float(ts[first + after[0]]) if len(after) else 1.0
