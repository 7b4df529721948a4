"""MediaPipe FaceMesh (468 landmarks) in PyTorch: ROI logic, crop, network, projection back.

ROIs follow MediaPipe's face_landmark_front graph:
  * from a detection (face_detection_front_detection_to_roi): rect = detection box, rotation
    so that right eye -> left eye (keypoints 0 -> 1) is horizontal, square on the long
    side, scaled 1.5;
  * from landmarks (face_landmark_landmarks_to_roi, used when tracking): rect = bounding
    box of all landmarks, rotation from landmark 33 -> 263 (outer eye corners), square,
    scale 1.5.
A ROI is a tensor [..., 5] = (center_x, center_y, width, height, rotation) in pixels.
"""
from __future__ import annotations

import math

import torch

from .tflite_graph import TFLiteGraph

ROI_SCALE = 1.5
RIGHT_EYE_OUTER = 33
LEFT_EYE_OUTER = 263
NUM_LANDMARKS = 468


def _normalize_radians(angle: torch.Tensor) -> torch.Tensor:
    return angle - 2 * math.pi * torch.floor((angle + math.pi) / (2 * math.pi))


def _square_roi(center: torch.Tensor, size: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
                scale: float) -> torch.Tensor:
    rotation = _normalize_radians(torch.atan2(end[..., 1] - start[..., 1], end[..., 0] - start[..., 0]))
    side = size.max(dim=-1).values * scale
    return torch.stack([center[..., 0], center[..., 1], side, side, rotation], dim=-1)


def roi_from_detection(box: torch.Tensor, keypoints: torch.Tensor, scale: float = ROI_SCALE) -> torch.Tensor:
    """ROI [..., 5] from detection boxes [..., 4] (x0, y0, x1, y1) and keypoints [..., 6, 2], pixels."""
    center = (box[..., :2] + box[..., 2:]) / 2
    size = box[..., 2:] - box[..., :2]
    return _square_roi(center, size, keypoints[..., 0, :], keypoints[..., 1, :], scale)


def roi_from_landmarks(landmarks: torch.Tensor, scale: float = ROI_SCALE) -> torch.Tensor:
    """ROI [..., 5] from landmarks [..., 468, 2+] in pixels (MediaPipe's tracking ROI)."""
    xy = landmarks[..., :2]
    lo, hi = xy.min(dim=-2).values, xy.max(dim=-2).values
    return _square_roi((lo + hi) / 2, hi - lo, xy[..., RIGHT_EYE_OUTER, :], xy[..., LEFT_EYE_OUTER, :], scale)


class FaceMesh(torch.nn.Module):
    """Landmark network: crops [B, 3, 192, 192] (0..255) + their ROIs -> landmarks in pixels."""

    def __init__(self, graph: TFLiteGraph):
        super().__init__()
        self.graph = graph
        self.input_size = int(graph.spec["input_shape"][1])

    @torch.no_grad()
    def forward(self, crops: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (landmarks [B, 468, 3] in image pixels, presence [B] in 0..1).

        MediaPipe's LandmarkProjectionCalculator: tensor coords / 192 - 0.5, rotate by the
        ROI rotation, scale by ROI size, add the ROI centre; z is scaled like x.
        """
        raw, flag = self.graph(crops / 255.0)  # the mesh model takes values in [0, 1]
        pts = raw.reshape(crops.shape[0], NUM_LANDMARKS, 3) / self.input_size
        rois = rois.to(pts.dtype)
        cx, cy, w, h, theta = (rois[:, i].view(-1, 1) for i in range(5))
        x, y = pts[..., 0] - 0.5, pts[..., 1] - 0.5
        cos, sin = torch.cos(theta), torch.sin(theta)
        px = (cos * x - sin * y) * w + cx
        py = (sin * x + cos * y) * h + cy
        pz = pts[..., 2] * w
        presence = torch.sigmoid(flag.reshape(-1))
        return torch.stack([px, py, pz], dim=-1), presence
