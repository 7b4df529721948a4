"""MediaPipe BlazeFace detectors (short range 128², full range 192²) in PyTorch.

The network itself is the converted TFLite graph (see tflite_graph.py). What MediaPipe does
around it lives in calculator options that are not part of the .tflite file; the values
below are copied from face_detection_short_range.pbtxt / face_detection_full_range.pbtxt
(SsdAnchorsCalculator, TensorsToDetectionsCalculator, NonMaxSuppressionCalculator) so that
anchors, box decoding and weighted NMS give MediaPipe's detections.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .tflite_graph import TFLiteGraph


@dataclass(frozen=True)
class DetectorConfig:
    """MediaPipe calculator options for one detector variant."""

    name: str  # key prefix in the model bundle
    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float  # > 0 adds a second anchor per layer
    min_score: float = 0.5
    nms_threshold: float = 0.3
    score_clip: float = 100.0
    anchor_offset: float = 0.5
    num_keypoints: int = 6


SHORT_RANGE = DetectorConfig("short_range", 128, (8, 16, 16, 16), 1.0)
FULL_RANGE = DetectorConfig("full_range", 192, (4,), 0.0)


def make_anchors(cfg: DetectorConfig) -> np.ndarray:
    """SSD anchor centres [N, 2] (x, y), normalised; MediaPipe's fixed_anchor_size => w = h = 1.

    Consecutive layers with the same stride share one feature map; each layer adds one
    anchor per cell for aspect ratio 1.0 plus one if interpolated_scale_aspect_ratio > 0.
    Order: feature map, then row, then column, then anchor (as MediaPipe).
    """
    anchors = []
    per_layer = 1 + (1 if cfg.interpolated_scale_aspect_ratio > 0 else 0)
    layer = 0
    while layer < len(cfg.strides):
        stride = cfg.strides[layer]
        count = 0
        while layer < len(cfg.strides) and cfg.strides[layer] == stride:
            count += per_layer
            layer += 1
        size = math.ceil(cfg.input_size / stride)
        for y in range(size):
            for x in range(size):
                for _ in range(count):
                    anchors.append(((x + cfg.anchor_offset) / size, (y + cfg.anchor_offset) / size))
    return np.asarray(anchors, dtype=np.float32)


@dataclass
class RawDetections:
    """Decoded detections of one model input, normalised to that input (0..1)."""

    boxes: torch.Tensor  # [N, 4] x0, y0, x1, y1
    keypoints: torch.Tensor  # [N, K, 2]
    scores: torch.Tensor  # [N]


class BlazeFace(torch.nn.Module):
    """Detector network + anchors + decoding; input [B, 3, S, S] with pixel values 0..255."""

    def __init__(self, graph: TFLiteGraph, cfg: DetectorConfig):
        super().__init__()
        self.graph = graph
        self.cfg = cfg
        self.register_buffer("anchors", torch.from_numpy(make_anchors(cfg)))
        expected = graph.spec["input_shape"][1]
        if expected != cfg.input_size:
            raise ValueError(f"{cfg.name}: graph input {expected} != configured {cfg.input_size}")

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> list[RawDetections]:
        x = pixels / 127.5 - 1.0  # MediaPipe feeds the detector values in [-1, 1]
        regressors, classificators = self.graph(x)
        if regressors.shape[1] != self.anchors.shape[0]:
            raise ValueError(f"{self.cfg.name}: {regressors.shape[1]} boxes vs {self.anchors.shape[0]} anchors")
        scores = torch.sigmoid(classificators[..., 0].clamp(-self.cfg.score_clip, self.cfg.score_clip))
        s = float(self.cfg.input_size)
        ax, ay = self.anchors[:, 0], self.anchors[:, 1]
        cx = regressors[..., 0] / s + ax
        cy = regressors[..., 1] / s + ay
        w = regressors[..., 2] / s
        h = regressors[..., 3] / s
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
        k = self.cfg.num_keypoints
        kps = regressors[..., 4:4 + 2 * k].reshape(*regressors.shape[:2], k, 2) / s
        kps = kps + self.anchors.view(1, -1, 1, 2)
        out = []
        for b in range(pixels.shape[0]):
            keep = scores[b] >= self.cfg.min_score
            out.append(weighted_nms(boxes[b][keep], kps[b][keep], scores[b][keep], self.cfg.nms_threshold))
        return out


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU between box sets [N, 4] and [M, 4] -> [N, M]."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(union))


def weighted_nms(boxes: torch.Tensor, keypoints: torch.Tensor, scores: torch.Tensor,
                 threshold: float) -> RawDetections:
    """MediaPipe's WEIGHTED non-max suppression.

    Take the best remaining box; every remaining box overlapping it with IoU > threshold
    (itself included) is merged into a score-weighted average of boxes and keypoints; the
    merged detection keeps the best box's score. Runs over the few boxes above threshold.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    iou = box_iou(boxes, boxes)
    remaining = torch.ones(len(scores), dtype=torch.bool, device=scores.device)
    out_b, out_k, out_s = [], [], []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        group = remaining & (iou[i] > threshold)
        group[i] = True
        weights = scores[group]
        total = weights.sum()
        out_b.append((boxes[group] * weights[:, None]).sum(0) / total)
        out_k.append((keypoints[group] * weights[:, None, None]).sum(0) / total)
        out_s.append(scores[i])
        remaining &= ~group
    if not out_s:
        return RawDetections(boxes.new_zeros(0, 4), keypoints.new_zeros(0, *keypoints.shape[1:]), scores.new_zeros(0))
    return RawDetections(torch.stack(out_b), torch.stack(out_k), torch.stack(out_s))
