"""The animation rig: the photo's mesh, and how far each motion channel moves each vertex.

`mesh.py` extends FaceMesh into triangles covering the whole crop; `fields.py` builds one
displacement field per motion channel (`types.CHANNELS`); `folds.py` keeps the deformed
mesh from folding. The per-frame deformation is then a few batched multiply-adds
(`deform.py`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..types import FIELD_CHANNELS
from . import fields as fl
from .fields import CLOSING_SPAN
from .folds import FoldGuard
from .mesh import FaceAxes, build_mesh, rasterize_triangle_ids


@dataclass
class FaceRig:
    size: int  # the crop is size x size pixels
    vertices: torch.Tensor  # [V, 3] float32 crop pixels (x, y, z); first 468 are FaceMesh points
    triangles: torch.Tensor  # [T, 3] int64
    mouth_triangles: torch.Tensor  # [T] bool: triangles closing the mouth hole (interior is synthesized there)
    head_weight: torch.Tensor  # [V] share of the rigid head motion (head_rotation, head_translation)
    fields: dict[str, torch.Tensor]  # channel name -> [V, 2] displacement per unit of it (types.FIELD_CHANNELS)
    close_dir: torch.Tensor  # [V, 2] displacement that brings the photo's parted lips together (zeros if closed)
    rest_open: float  # the photo's own lip opening at the centre, in mouth widths (0 for closed lips)
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
        def move(v):
            if isinstance(v, dict):
                return {k: move(x) for k, x in v.items()}
            return v.to(device) if isinstance(v, (torch.Tensor, FoldGuard)) else v

        return FaceRig(**{k: move(v) for k, v in self.__dict__.items()})


def build_rig(landmarks: np.ndarray, mesh_triangles: np.ndarray, size: int) -> FaceRig:
    """Rig for a photo crop of `size` pixels whose FaceMesh points are `landmarks` [468,3] (crop pixels)."""
    lm = np.asarray(landmarks, np.float64)
    axes = FaceAxes.of(lm[:, :2])
    mesh = build_mesh(lm, mesh_triangles, size, axes)
    layout = fl.MouthLayout.of(axes, mesh.xy)
    jaw_w, upper_w = fl.jaw_weights(axes, layout, mesh_triangles, mesh.ring_jaw)
    lip_width = fl.lip_width_field(axes, layout)
    fields = {
        "jaw_open": fl.jaw_open_field(axes, jaw_w, upper_w),
        "lip_width": lip_width,
        "pucker": fl.pucker_field(axes, layout, lip_width),
        "lip_tuck": fl.lip_tuck_field(axes, layout),
        "brow_raise": fl.brow_raise_field(axes, layout),
        "blink": fl.blink_field(axes, len(mesh.xy)),
    }
    assert set(fields) == set(FIELD_CHANNELS), "one field per channel that the rig moves by a field"
    close_dir = fl.closing_field(axes, layout, jaw_w, mesh_triangles)

    centre, face_h = mesh.centre, axes.face_h
    pivot = np.array([centre[0], centre[1] + 0.25 * face_h, float(lm[:, 2].mean()) + 0.6 * face_h])
    # A point the jaw or the lips move much does not follow the surface in front of it.
    hidden = mesh.hidden
    hidden = hidden[(np.abs(jaw_w[hidden]) < 0.25) & (upper_w[hidden] < 0.25) & ~layout.lower_lip()[hidden]]
    tri_map = rasterize_triangle_ids(mesh.xy, mesh.triangles, size)
    moving = (mesh.head_weight > 0) | np.any([np.abs(d).sum(1) > 0 for d in (close_dir, *fields.values())], axis=0)
    f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    verts = np.concatenate([mesh.xy, mesh.z[:, None]], axis=1)
    return FaceRig(
        size=size, vertices=f32(verts), triangles=torch.as_tensor(mesh.triangles, dtype=torch.int64),
        mouth_triangles=torch.as_tensor(mesh.mouth_mask), head_weight=f32(mesh.head_weight),
        fields={k: f32(fields[k]) for k in FIELD_CHANNELS}, close_dir=f32(close_dir), rest_open=layout.rest_open,
        pivot=f32(pivot), face_height=face_h, mouth_width=axes.mouth_w, down=f32(axes.down),
        tri_map=torch.as_tensor(tri_map), moving_vertices=torch.as_tensor(moving),
        guard=FoldGuard.build(mesh.xy, mesh.triangles, mesh.mouth_mask, mesh.lid_mask, moving, hidden,
                              np.asarray(mesh_triangles)[mesh.cover[hidden]], mesh.cover_w[hidden]),
    )
