"""The mouth painter's contract: what it learns from the photo once, and what it gets per chunk.

A painter fills the opening between the deformed inner lips with a mouth interior. It
is chosen by the `mouth_painter` setting; a learned decoder plugs in here the same way
(`prepare` once per clip, `paint` per chunk of frames, batched, on the renderer's device).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..deform import rigid_head
from ..rig import FaceRig


@dataclass
class MouthSource:
    """What a painter may learn from the photo, once per clip."""

    crop: np.ndarray  # [S,S,3] uint8, the animated square of the photo
    image: torch.Tensor  # [1,3,S,S] float 0..1 on the renderer's device (the same pixels)
    landmarks: np.ndarray  # [468,3] FaceMesh points in crop pixels
    rig: FaceRig  # on the renderer's device
    upscale: float  # how much the crop was enlarged from the photo's pixels (the classic painter's softness)
    noise: torch.Tensor  # [S,S] fixed unit grain pattern (same every frame: no shimmer)


@dataclass
class MouthGeometry:
    """One chunk of frames: where the face is, and every motion channel that put it there (for
    painters that shape the mouth from the channels themselves, like a learned decoder).

    A channel of `types.CHANNELS` reads as an attribute: `g.jaw_open` [B] (the lips' opening
    in mouth widths), `g.head_rotation` [B,3] (yaw, pitch, roll in radians), ...
    """

    rig: FaceRig
    tgt: torch.Tensor  # [B,V,2] deformed rig vertices, crop pixels
    controls: Mapping[str, torch.Tensor]  # channel name -> [B] or [B, dims], on the rig's device

    def __getattr__(self, name: str) -> torch.Tensor:
        controls = self.__dict__.get("controls")
        if controls is not None and name in controls:
            return controls[name]
        raise AttributeError(f"MouthGeometry has no attribute or motion channel {name!r}")

    @property
    def batch(self) -> int:
        return int(self.tgt.shape[0])

    def skull(self, points: torch.Tensor) -> torch.Tensor:
        """Rest points [N,3] (crop pixels + depth) carried rigidly with the head -> [B,N,2]."""
        return rigid_head(self.rig, points[None].expand(self.batch, -1, -1), self.head_rotation, self.head_translation)


class MouthPainter(Protocol):
    """Fills the mouth opening of rendered frames (see module docstring)."""

    def prepare(self, source: MouthSource) -> None:
        """Learn what is needed from the photo (colours, its own teeth ...), once per clip."""

    def paint(self, frames: torch.Tensor, offset: tuple[int, int], geometry: MouthGeometry) -> torch.Tensor:
        """Paint, in place, into `frames` [B,3,h,w] (0..1): a window of the crop whose top-left
        pixel is `offset` (x, y); landmark coordinates are in crop pixels. Returns `frames`."""
