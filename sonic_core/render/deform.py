"""Per-frame target positions of the rig's vertices, batched over frames (any device)."""
from __future__ import annotations

from collections.abc import Mapping

import torch

from ..types import FIELD_CHANNELS
from .rig import FaceRig


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """[B,3] (yaw, pitch, roll) radians -> [B,3,3], image axes (x right, y down, z away from camera)."""
    yaw, pitch, roll = angles.unbind(-1)
    c, s = torch.cos, torch.sin
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)
    ry = torch.stack([c(yaw), zero, s(yaw), zero, one, zero, -s(yaw), zero, c(yaw)], -1).view(-1, 3, 3)
    rx = torch.stack([one, zero, zero, zero, c(pitch), -s(pitch), zero, s(pitch), c(pitch)], -1).view(-1, 3, 3)
    rz = torch.stack([c(roll), -s(roll), zero, s(roll), c(roll), zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ rx @ ry


def rigid_head(rig: FaceRig, points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Move [B,N,3] points with the head (rotation about the rig pivot, then translation); returns [B,N,2]."""
    r = rotation_matrices(rotation)
    moved = (points - rig.pivot) @ r.transpose(1, 2) + rig.pivot
    return moved[..., :2] + (translation * rig.face_height)[:, None, :]


def deform(rig: FaceRig, controls: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Target vertex positions [B,V,2] for a chunk of frames.

    `controls`: every channel of `types.CHANNELS` by name, [B] or [B, dims] on the rig's
    device (`PortraitRenderer.controls`). Each field channel adds its displacement field
    times its value; the head channels then move the result rigidly.

    `jaw_open` is the lips' opening in mouth widths (approximately: the jaw field opens the
    centre by ~1.1x). Where the photo's lips are parted (`rig.rest_open` > 0, a smile showing
    teeth), openings below `rig.close_span` close them part of the way (0 = lips together, so
    `dynamic_scale` 0 holds a smiling photo's lips closed) and larger ones drop the jaw by the
    difference, past the photo's own opening.
    """
    base = rig.vertices[None, :, :2]
    amount = dict(controls)
    if rig.rest_open > 0:
        span = rig.close_span
        closing = (1.0 - amount["jaw_open"] / span).clamp(0.0, 1.0)
        base = base + closing[:, None, None] * rig.close_dir
        amount["jaw_open"] = (amount["jaw_open"] - span).clamp_min(0.0)
    local = base
    for name in FIELD_CHANNELS:
        local = local + amount[name][:, None, None] * rig.fields[name]
    local3 = torch.cat([local, rig.vertices[None, :, 2:].expand(local.shape[0], -1, -1)], dim=-1)
    head = rigid_head(rig, local3, amount["head_rotation"], amount["head_translation"])
    return rig.guard.unfold(rig.vertices[:, :2], local + rig.head_weight[None, :, None] * (head - local))
