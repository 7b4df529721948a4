"""The painter as a mouth source for a video: one reference frame animated by the photo renderer.

For `mouth_source='painter'` a dubbing job (and the benchmark's comparison) takes the frame of
the video with the most neutral mouth and pose, animates its mouth with the photo pipeline's
rig and mouth painter, and hands each rendered crop, with where its warp points went, to the
same compositor that pastes exemplars. Only the mouth channels move; the head is the video's.
"""
from __future__ import annotations

import numpy as np
import torch

from ..types import MotionTrack
from . import shape as sh

MIN_SIDE = 256  # the reference crop is rendered at least this large (small videos are upsampled)


class PaintedMouth:
    """Renders the reference frame's mouth at target (opening, width) descriptors."""

    def __init__(self, frame: np.ndarray, landmarks: np.ndarray, device: torch.device, painter: str,
                 steps: int = 25, model_dir=None):
        from ..models import load_face_topology
        from ..pipeline import _resize_uint8, crop_box
        from ..render.renderer import PortraitRenderer

        lo, hi = landmarks[:, :2].min(0), landmarks[:, :2].max(0)
        box = crop_box((float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])), 0.25, frame.shape[1], frame.shape[0])
        x0, y0, x1, y1 = box
        side = max(MIN_SIDE, (x1 - x0) // 2 * 2)
        crop = _resize_uint8(np.ascontiguousarray(frame[y0:y1, x0:x1]), side, side)
        scale = side / float(x1 - x0)
        lm = landmarks.astype(np.float32).copy()
        lm[:, 0] = (lm[:, 0] - x0) * scale
        lm[:, 1] = (lm[:, 1] - y0) * scale
        lm[:, 2] *= scale
        self.renderer = PortraitRenderer(crop, lm, load_face_topology(model_dir), device, steps, 0, scale, painter)
        self.side = side

    @torch.no_grad()
    def render(self, targets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops [B,1,3,S,S] 0..1 and their warp points [B,1,W,2] (crop pixels) for targets [B,2]."""
        from ..render.deform import deform

        n = len(targets)
        zeros = np.zeros(n, np.float32)
        track = MotionTrack(fps=25.0, jaw_open=np.maximum(targets[:, 0], 0).astype(np.float32),
                            lip_width=targets[:, 1].astype(np.float32), head_rotation=np.zeros((n, 3), np.float32),
                            head_translation=np.zeros((n, 2), np.float32), blink=zeros, brow_raise=zeros)
        r = self.renderer
        frames = r.render(track, 0, n)
        pts = deform(r.rig, r.controls(track, 0, n))[:, list(sh.WARP_POINTS)]
        return (frames.permute(0, 3, 1, 2).float() / 255.0)[:, None], pts[:, None]


def reference_frame(descriptors: np.ndarray, usable: np.ndarray) -> int:
    """The usable frame whose mouth is closest to closed and neutral, seen most frontally."""
    cost = np.abs(descriptors[:, :2]).sum(1) * 2.0 + np.abs(descriptors[:, 2:]).sum(1)
    cost = np.where(usable, cost, np.inf)
    return int(np.argmin(cost))
