"""Frames from a motion track: deform the rig, inverse-warp the photo, paint the mouth, paste back."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..config import MOUTH_PAINTERS
from ..types import CHANNELS, MotionTrack
from .deform import deform, rigid_head
from .eyes import EYES, composite_lids, estimate_lid_style
from .mouth import MouthGeometry, MouthPainter, MouthSource, make_painter
from .mouth.style import estimate_grain
from .rig import FaceRig, build_rig
from .warp import inverse_warp, triangle_neighbours


class PortraitRenderer:
    """Renders square face-crop frames of one portrait; holds everything that is per-photo.

    `crop` is the [S,S,3] uint8 source crop, `landmarks` its FaceMesh points in crop
    pixels, `triangles` the FaceMesh triangles, `upscale` how much the crop was enlarged
    from the photo, `mouth_painter` one of config.MOUTH_PAINTERS or a painter object (used as
    it is and prepared for this photo: give each renderer its own). All per-frame work runs on
    `device` in batches (`render(track, start, stop)`).
    """

    def __init__(self, crop: np.ndarray, landmarks: np.ndarray, triangles: np.ndarray,
                 device: torch.device | str = "cpu", max_steps: int = 25, seed: int = 0,
                 upscale: float = 1.0, mouth_painter: "str | MouthPainter" = MOUTH_PAINTERS[0]):
        self.device = torch.device(device)
        self.size = int(crop.shape[0])
        self.max_steps = int(max_steps)
        # Half-resolution warp field above 384 px: 4x less solving, no visible difference
        # (see warp.inverse_warp); small crops keep the exact per-pixel solve.
        self.warp_stride = 2 if self.size >= 384 else 1
        rig = build_rig(landmarks, triangles, self.size)
        self.rig: FaceRig = rig.to(self.device)
        self.neighbours = triangle_neighbours(rig.triangles).to(self.device)
        self.source_u8 = torch.from_numpy(np.array(crop, dtype=np.uint8, copy=True)).to(self.device)
        self.source = self.source_u8.permute(2, 0, 1)[None].float() / 255.0
        gen = torch.Generator().manual_seed(int(seed) + 7919)
        self.noise = torch.randn(self.size, self.size, generator=gen).to(self.device)
        self.last_steps = 0
        self._active = self.rig.active_vertices()
        self.painter = make_painter(mouth_painter)
        self.painter.prepare(MouthSource(crop=crop, image=self.source, landmarks=np.asarray(landmarks), rig=self.rig,
                                         upscale=upscale, noise=self.noise))
        self.lid_style = estimate_lid_style(crop, landmarks, estimate_grain(crop, landmarks, rig.mouth_width))
        self._eye_idx = [list(up) + list(lo) for up, lo, _ in EYES]

    def controls(self, track: MotionTrack, start: int, stop: int) -> dict[str, torch.Tensor]:
        """Every motion channel of track frames start..stop-1, by name, as float32 on the renderer's device."""
        return {c.name: torch.as_tensor(np.asarray(getattr(track, c.name)[start:stop]), dtype=torch.float32,
                                        device=self.device) for c in CHANNELS}

    @torch.no_grad()
    def render(self, track: MotionTrack, start: int, stop: int) -> torch.Tensor:
        """Frames [B,S,S,3] uint8 on the renderer's device for track frames start..stop-1."""
        c = self.controls(track, start, stop)
        rig = self.rig
        tgt = deform(rig, c)
        B, S = tgt.shape[0], self.size
        # Only the box around the deforming triangles (in any frame) is warped; the rest is the photo.
        pts = tgt[:, self._active].reshape(-1, 2)
        x0, y0 = (int(v) for v in pts.amin(0).floor().clamp(0, S - 1).tolist())
        x1, y1 = (int(v) for v in pts.amax(0).ceil().clamp(1, S).tolist())
        window = (x0, y0, max(1, x1 - x0), max(1, y1 - y0))
        src_xy, _, steps = inverse_warp(rig.vertices[:, :2], tgt, rig.triangles, self.neighbours, rig.tri_map,
                                        window, self.max_steps, self.warp_stride)
        self.last_steps = steps
        grid = src_xy * (2.0 / S) - 1.0
        win = F.grid_sample(self.source.expand(B, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
        geometry = MouthGeometry(rig=rig, tgt=tgt, controls=c)
        win = self.painter.paint(win, (x0, y0), geometry)
        if bool((c["blink"] > 0.1).any()):
            rest = rig.vertices[self._eye_idx[0] + self._eye_idx[1]][None].expand(B, -1, -1)
            rest_eyes = rigid_head(rig, rest, c["head_rotation"], c["head_translation"]).view(B, 2, 18, 2)
            win = composite_lids(win, (x0, y0), tgt, rest_eyes, c["blink"], self.lid_style, self.noise)
        out = self.source_u8[None].expand(B, -1, -1, -1).clone()
        out[:, y0:y0 + window[3], x0:x0 + window[2]] = (win.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1)
        return out
