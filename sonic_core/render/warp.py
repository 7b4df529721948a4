"""Inverse piecewise-affine warp: which source point does each output pixel show?

The source mesh never changes, so each source pixel's triangle is rasterized once
(`FaceRig.tri_map`). Per frame we compute every deformed triangle's barycentric map,
then each output pixel
1. jumps: takes the triangle under its current source guess and applies that
   triangle's map to itself (exact when the guess was right; close otherwise), and
2. walks: while its barycentric coordinates say it lies outside the current
   triangle, steps to the neighbour across the most violated edge.
Jumps cover large motion in one go; walking finds thin triangles (an opening mouth
is a slit in the photo) that no source-space lookup can hit. Everything is batched
tensor maths, no per-frame rasterization. `max_steps` (the user's `inference_steps`)
bounds the iterations; it stops early once every pixel sits inside its triangle.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

JUMPS = 2
INSIDE_EPS = 1e-4
LOST_EPS = 0.05  # barycentric miss beyond which a pixel counts as lost (a fold)


def triangle_neighbours(tris: torch.Tensor) -> torch.Tensor:
    """[T,3] index of the triangle across the edge opposite each vertex (-1 on the mesh border)."""
    T = tris.shape[0]
    nb = torch.full((T, 3), -1, dtype=torch.int64)
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for t, (a, b, c) in enumerate(tris.tolist()):
        for k, (u, v) in enumerate(((b, c), (c, a), (a, b))):
            edges.setdefault((min(u, v), max(u, v)), []).append((t, k))
    for owners in edges.values():
        for (t1, k1) in owners:
            for (t2, _) in owners:
                if t2 != t1:
                    nb[t1, k1] = t2
                    break
    return nb


def barycentric_affines(tgt: torch.Tensor, tris: torch.Tensor) -> torch.Tensor:
    """[B,T,2,3] maps from a target point to its barycentric (l1, l2) in each deformed triangle."""
    t = tgt[:, tris]  # [B,T,3,2]
    e1, e2 = t[:, :, 1] - t[:, :, 0], t[:, :, 2] - t[:, :, 0]
    det = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    # Collapsed triangles (a closed mouth hole) get a tiny signed floor, keeping maps finite.
    det = torch.where(det.abs() < 1e-6, torch.where(det < 0, -1e-6, 1e-6), det)
    inv = torch.stack([e2[..., 1], -e2[..., 0], -e1[..., 1], e1[..., 0]], -1).view(*det.shape, 2, 2) / det[..., None, None]
    off = -(inv @ t[:, :, 0, :, None])
    return torch.cat([inv, off], dim=-1)


COARSE = 4


def inverse_warp(src: torch.Tensor, tgt: torch.Tensor, tris: torch.Tensor, neighbours: torch.Tensor,
                 tri_map: torch.Tensor, window: tuple[int, int, int, int], max_steps: int, stride: int = 1
                 ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Source positions [B,h,w,2] and triangle ids [B,h,w] for the output pixels of `window`.

    `src` [V,2] rest vertices, `tgt` [B,V,2] deformed vertices; `window` = (x0, y0, w, h)
    lets the caller skip pixels that cannot move. Solves coarse-to-fine: the walk over
    long distances (a chin that dropped, a lid that closed) happens on a grid 4x coarser,
    whose answer seeds the fine solve, which then needs only a few steps.

    `stride` > 1 solves the fine level on every `stride`-th pixel and interpolates the
    rest bilinearly. The map is piecewise affine and continuous, which bilinear
    interpolation reproduces exactly inside triangles, so the only error is within
    `stride` pixels of triangle edges where the slope changes (sub-pixel on skin; at the
    lips' inner edge, hidden under the mouth interior). Returns the coarse iterations used.
    """
    x0, y0, width, height = window
    bary = barycentric_affines(tgt, tris)
    stride = max(1, min(int(stride), COARSE))
    cw, ch = -(-width // COARSE), -(-height // COARSE)
    fw, fh = -(-width // stride), -(-height // stride)
    _, coarse_tid, steps = _solve(src, bary, tris, neighbours, tri_map, (x0, y0, cw, ch), COARSE, max_steps, None)
    rep = COARSE // stride
    init = coarse_tid.repeat_interleave(rep, 1).repeat_interleave(rep, 2)[:, :fh, :fw]
    q, tid, _ = _solve(src, bary, tris, neighbours, tri_map, (x0, y0, fw, fh), stride, max(4, max_steps // 2), init)
    if stride > 1:
        q = F.interpolate(q.permute(0, 3, 1, 2), scale_factor=stride, mode="bilinear",
                          align_corners=False)[:, :, :height, :width].permute(0, 2, 3, 1)
        tid = tid.repeat_interleave(stride, 1).repeat_interleave(stride, 2)[:, :height, :width]
    return q, tid, steps


def _solve(src: torch.Tensor, bary_aff: torch.Tensor, tris: torch.Tensor, neighbours: torch.Tensor,
           tri_map: torch.Tensor, window: tuple[int, int, int, int], stride: int, max_steps: int,
           init_tid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Jump/walk solve on a pixel grid; iterates only on the pixels still outside their triangle."""
    x0, y0, width, height = window
    B, T = bary_aff.shape[:2]
    size = tri_map.shape[0]
    dev = bary_aff.device
    bary = bary_aff.reshape(B * T, 6)
    s = src[tris]  # [T,3,2]
    s_origin, s_e1, s_e2 = s[:, 0], s[:, 1] - s[:, 0], s[:, 2] - s[:, 0]
    ys = y0 + stride * torch.arange(height, device=dev, dtype=torch.float32) + 0.5 * stride
    xs = x0 + stride * torch.arange(width, device=dev, dtype=torch.float32) + 0.5 * stride
    py, px = torch.meshgrid(ys, xs, indexing="ij")
    n_pix = height * width
    px, py = px.reshape(1, -1).expand(B, -1).reshape(-1), py.reshape(1, -1).expand(B, -1).reshape(-1)
    frame_off = (torch.arange(B, device=dev) * T).repeat_interleave(n_pix)

    def locate(tid, x, y, off):
        a = bary[tid + off]  # [N,6]
        l1 = a[:, 0] * x + a[:, 1] * y + a[:, 2]
        l2 = a[:, 3] * x + a[:, 4] * y + a[:, 5]
        return 1.0 - l1 - l2, l1, l2

    def to_source(tid, l1, l2):
        o, e1, e2 = s_origin[tid], s_e1[tid], s_e2[tid]
        return o[:, 0] + l1 * e1[:, 0] + l2 * e2[:, 0], o[:, 1] + l1 * e1[:, 1] + l2 * e2[:, 1]

    def lookup(x, y):
        return tri_map[y.floor().clamp(0, size - 1).long(), x.floor().clamp(0, size - 1).long()]

    tid = lookup(px, py) if init_tid is None else init_tid.reshape(-1).clone()
    active = torch.arange(tid.numel(), device=dev)
    steps = 0
    last_count = torch.full((B,), tid.numel(), device=dev, dtype=torch.int64)
    stalled = torch.zeros(B, dtype=torch.bool, device=dev)
    for steps in range(1, max_steps + 1):
        t_a, x_a, y_a, o_a = tid[active], px[active], py[active], frame_off[active]
        l0, l1, l2 = locate(t_a, x_a, y_a, o_a)
        lmin, k = torch.stack([l0, l1, l2], dim=-1).min(dim=-1)
        outside = lmin < -INSIDE_EPS
        # A frame is done when all its pixels are inside their triangles, or when its walk
        # stalls: the few pixels left sit in folds (overlapping triangles) where no triangle
        # is right. Decided per frame, so a frame's pixels never depend on which other
        # frames share its batch (chunked rendering equals one big batch, bit for bit).
        frame = active // n_pix
        count = torch.bincount(frame[outside], minlength=B)
        if steps > JUMPS + 1:
            stalled |= count >= last_count
        last_count = count
        outside &= ~stalled[frame]
        if not bool(outside.any()):
            break
        active, t_a, k = active[outside], t_a[outside], k[outside]
        if init_tid is None and steps <= JUMPS:
            qx, qy = to_source(t_a, l1[outside], l2[outside])
            tid[active] = lookup(qx, qy)
        else:
            nb = neighbours[t_a, k]
            tid[active] = torch.where(nb >= 0, nb, t_a)
    l0, l1, l2 = locate(tid, px, py, frame_off)
    lam = torch.stack([l0, l1, l2], dim=-1)
    lost = lam.amin(-1) < -LOST_EPS
    lam = lam.clamp_min(0.0)
    lam = lam / lam.sum(-1, keepdim=True).clamp_min(1e-6)
    qx, qy = to_source(tid, lam[:, 1], lam[:, 2])
    q = torch.stack([qx, qy], dim=-1).view(B, height, width, 2)
    if init_tid is not None and bool(lost.any()):
        q = _fill_lost(q, lost.view(B, height, width))
    return q, tid.view(B, height, width), steps


def _fill_lost(q: torch.Tensor, lost: torch.Tensor, rounds: int = 4) -> torch.Tensor:
    """Replace source positions of pixels that found no triangle (mesh folds) by their neighbours' mean.

    A lost pixel clamped onto a wrong triangle may sample far away (a fleck of background
    on the lip); its neighbours' positions are what a smooth warp would give there.
    """
    good = (~lost).float()[:, None]
    val = q.permute(0, 3, 1, 2) * good
    filled = q.permute(0, 3, 1, 2)
    for _ in range(rounds):
        num = F.avg_pool2d(val, 5, stride=1, padding=2)
        den = F.avg_pool2d(good, 5, stride=1, padding=2)
        est = num / den.clamp_min(1e-6)
        ok = den > 0
        filled = torch.where((good == 0) & ok, est, filled)
        newly = ((good == 0) & ok).float()
        val = val + est * newly
        good = good + newly
        if bool((good > 0).all()):
            break
    return filled.permute(0, 2, 3, 1)
