"""FaceAnalyzer: find faces and their 468 FaceMesh landmarks in a photo or in video frames.

Detection runs two MediaPipe detectors and merges them: the short-range model (128², what
MediaPipe FaceMesh itself uses; best for selfies and portraits) on the letterboxed photo,
and the full-range model (192², made for small / distant faces) on the letterboxed photo
and, for big photos, on overlapping tiles so that a small face in a group or full-body shot
is still large enough in the model's input. Landmarks follow MediaPipe FaceMesh: ROI from
the detection, then (refine=True) a second pass with the ROI re-estimated from the first
pass's landmarks, as MediaPipe does when tracking.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import torch

from ..errors import SonicInputError
from ..system import stable_threads
from ..types import Detection
from . import FaceNotFoundError
from .blazeface import FULL_RANGE, SHORT_RANGE, BlazeFace, RawDetections, weighted_nms
from .facemesh import FaceMesh, roi_from_detection, roi_from_landmarks
from .sampling import prefilter_factor, roi_bounds, sample_rois, sample_rois_from_array
from .tflite_graph import TFLiteGraph

# Short-range boxes are kept for faces at least this fraction of the letterboxed photo:
# MediaPipe made that model for selfie distance; smaller faces get full-range boxes.
SHORT_MIN_FRACTION = 0.15
# Tiles multiply the chances of a false positive: they need a higher score.
TILE_MIN_SCORE = 0.6
# Two boxes whose intersection covers more than this of the smaller one are one face.
CONTAINED = 0.5

NO_FACE_MESSAGE = (
    "No face was found in the image. Use a photo in which one face is clearly visible, roughly "
    "frontal (both eyes visible) and not too small (at least about 80 pixels across), or crop the "
    "photo closer to the face. Drawings and strongly stylised faces are often not detected."
)


def _overlap_min(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over the smaller box's area, [N, M]: 1 when one box contains the other."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    smaller = torch.minimum(area_a[:, None], area_b[None, :]).clamp(min=1e-6)
    return inter / smaller


def _box_reduce(image: np.ndarray, factor: int, band: int = 64) -> np.ndarray:
    """Average factor x factor pixel blocks of an HxWx3 uint8 image -> float32 (rounded to 8 bit).

    Pillow's C box reduce, a band of rows at a time: fast, and with memory bounded by the
    output (a torch version kept its freed temporaries mapped; numbers in the CHANGELOG).
    A last partial block averages the pixels it has.
    """
    from PIL import Image

    rows = [np.asarray(Image.fromarray(np.ascontiguousarray(image[y:y + band * factor])).reduce(factor))
            for y in range(0, image.shape[0], band * factor)]
    return np.concatenate(rows).astype(np.float32)


def _filter_size(dets: RawDetections, min_side: float) -> RawDetections:
    side = torch.minimum(dets.boxes[:, 2] - dets.boxes[:, 0], dets.boxes[:, 3] - dets.boxes[:, 1])
    keep = side >= min_side
    return RawDetections(dets.boxes[keep], dets.keypoints[keep], dets.scores[keep])


def _filter_score(dets: RawDetections, min_score: float) -> RawDetections:
    keep = dets.scores >= min_score
    return RawDetections(dets.boxes[keep], dets.keypoints[keep], dets.scores[keep])


def _suppress_contained(dets: RawDetections) -> RawDetections:
    """Drop a detection mostly inside a better-scored one (a face cut by a tile border)."""
    order = torch.argsort(dets.scores, descending=True, stable=True)
    boxes = dets.boxes[order]
    overlap = _overlap_min(boxes, boxes)
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    for i in range(len(order)):
        if keep[i]:
            later = torch.arange(len(order), device=boxes.device) > i
            keep &= ~(later & (overlap[i] > CONTAINED))
    idx = order[keep]
    return RawDetections(dets.boxes[idx], dets.keypoints[idx], dets.scores[idx])


@dataclasses.dataclass
class _Models:
    short: BlazeFace
    full: BlazeFace
    mesh: FaceMesh


def _stable_on_cpu(method):
    """On the CPU, run the face models with the same thread count every time (system.stable_threads):
    convolutions differ slightly between thread counts, and so would landmarks and every frame."""
    import functools

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        if torch.device(self.device).type != "cpu":
            return method(self, *args, **kwargs)
        with stable_threads():
            return method(self, *args, **kwargs)

    return run


class FaceAnalyzer:
    """Face detection + FaceMesh landmarks on `device`; models load on first use.

    Parameters
    ----------
    model_dir: folder of mediapipe_face.safetensors (built on first use, see sonic_core.models).
    device: torch device for the networks ("cpu", "cuda", ...).
    min_score: detection confidence threshold (MediaPipe's default 0.5).
    max_detection_side: photos larger than this are box-downscaled (in place of the
        full photo, with memory bounded by the output) before detection; landmarks are
        always measured on the full-resolution photo.
    tile_size: side of the half-overlapping tiles the full-range detector also scans when
        the (downscaled) photo is larger than 1.5 tiles; faces down to ~1/10 of a tile
        (64 px at the default) are found.
    prefilter_threshold: when a landmark crop shrinks the photo by at least this factor,
        the photo is box-filtered first (anti-aliasing). MediaPipe never filters; below the
        threshold we match it exactly.
    detect_prefilter_threshold: the same for the detectors' inputs. Kept higher because
        MediaPipe's detection boxes (which set the landmark ROI) are measured on unfiltered
        inputs; only big photos (> 8x the detector input) are filtered.
    """

    def __init__(self, model_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu", *,
                 min_score: float = 0.5, max_detection_side: int = 2048, tile_size: int = 640,
                 prefilter_threshold: float = 3.0, detect_prefilter_threshold: float = 8.0):
        self.model_dir = model_dir
        self.device = torch.device(device)
        self.min_score = float(min_score)
        self.max_detection_side = int(max_detection_side)
        self.tile_size = int(tile_size)
        self.prefilter_threshold = float(prefilter_threshold)
        self.detect_prefilter_threshold = float(detect_prefilter_threshold)
        self._models: _Models | None = None

    # ------------------------------------------------------------------ loading
    def _load(self) -> _Models:
        if self._models is None:
            from ..models import load_face_bundle

            tensors, metadata = load_face_bundle(self.model_dir)

            def graph(prefix: str) -> TFLiteGraph:
                spec = json.loads(metadata[f"graph.{prefix}"])
                consts = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith(prefix + "/")}
                return TFLiteGraph(spec, consts)

            short_cfg = dataclasses.replace(SHORT_RANGE, min_score=self.min_score)
            full_cfg = dataclasses.replace(FULL_RANGE, min_score=self.min_score)
            models = _Models(
                short=BlazeFace(graph("short_range"), short_cfg).to(self.device).eval(),
                full=BlazeFace(graph("full_range"), full_cfg).to(self.device).eval(),
                mesh=FaceMesh(graph("landmark")).to(self.device).eval(),
            )
            self._models = models
        return self._models

    # ------------------------------------------------------------------ detection
    @staticmethod
    def _check_image(image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            got = f"{type(image).__name__} {getattr(image, 'shape', '')} {getattr(image, 'dtype', '')}"
            raise SonicInputError(f"FaceAnalyzer expects an RGB image as a HxWx3 uint8 array, got {got}; "
                                  "convert grayscale / RGBA / 16-bit images to 8-bit RGB first.")
        if min(image.shape[:2]) < 8:
            raise SonicInputError(f"image of {image.shape[1]}x{image.shape[0]} pixels is too small to find a face in")
        return image

    def _working_image(self, image: np.ndarray) -> tuple[torch.Tensor, float]:
        """Float [1, 3, h, w] tensor for detection and the factor back to original pixels.

        Photos above max_detection_side are box-averaged by an integer factor (see
        `_box_reduce`), so an 8000x8000 photo never exists as a float copy.
        """
        h, w = image.shape[:2]
        factor = max(1, math.ceil(max(h, w) / self.max_detection_side))
        small = np.array(image, dtype=np.float32) if factor == 1 else _box_reduce(image, factor)
        tensor = torch.from_numpy(small).to(self.device)
        return tensor.permute(2, 0, 1).unsqueeze(0).contiguous(), float(factor)

    def _tile_rois(self, h: int, w: int) -> list[tuple[float, float, float, float, float]]:
        side = min(self.tile_size, h, w)
        if max(h, w) < 1.5 * self.tile_size:
            return []
        stride = 0.5 * side

        def starts(extent: int) -> list[float]:
            n = max(1, math.ceil((extent - side) / stride) + 1)
            return [0.0] if n == 1 else list(np.linspace(0.0, extent - side, n))

        return [(x + side / 2, y + side / 2, side, side, 0.0) for y in starts(h) for x in starts(w)]

    def _run_detector(self, model: BlazeFace, work: torch.Tensor, rois: list) -> RawDetections:
        """Run `model` on square ROIs of the working image; detections in working pixels."""
        size = model.cfg.input_size
        roi_t = torch.tensor(rois, dtype=torch.float32, device=self.device)
        groups: dict[int, list[int]] = {}
        for i, roi in enumerate(rois):
            groups.setdefault(prefilter_factor(roi[2], size, self.detect_prefilter_threshold), []).append(i)
        crops = torch.empty(len(rois), 3, size, size, device=self.device)
        for k, idx in groups.items():
            crops[idx] = sample_rois(work, roi_t[idx], size, border="zero", prefilter=k)
        boxes, kps, scores = [], [], []
        for roi, det in zip(roi_t, model(crops)):
            # Detector ROIs are axis-aligned squares: normalised p -> centre + (p - 0.5) * side.
            center, side = roi[:2], roi[2]
            boxes.append(((det.boxes.view(-1, 2, 2) - 0.5) * side + center).view(-1, 4))
            kps.append((det.keypoints - 0.5) * side + center)
            scores.append(det.scores)
        return RawDetections(torch.cat(boxes), torch.cat(kps), torch.cat(scores))

    @torch.no_grad()
    @_stable_on_cpu
    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces in an HxWx3 uint8 RGB image, largest box first (pixels of `image`).

        Passes, merged below: short-range on the letterboxed photo (kept for faces at
        least SHORT_MIN_FRACTION of the photo: its design range, and then its box is exactly
        MediaPipe FaceMesh's); full-range on the letterboxed photo; full-range on 50%
        overlapping tiles for big photos (a face up to half a tile always lies whole in one
        tile, so letterbox full-range boxes are only trusted for faces above that size:
        below it they are often loose).
        """
        image = self._check_image(image)
        models = self._load()
        work, factor = self._working_image(image)
        h, w = work.shape[-2:]
        side = float(max(h, w))
        letterbox = [(w / 2.0, h / 2.0, side, side, 0.0)]
        tiles = self._tile_rois(h, w)

        short = _filter_size(self._run_detector(models.short, work, letterbox), SHORT_MIN_FRACTION * side)
        full = self._run_detector(models.full, work, letterbox)
        if tiles:
            full = _filter_size(full, 0.5 * min(self.tile_size, h, w))
            tiled = _filter_score(self._run_detector(models.full, work, tiles), max(self.min_score, TILE_MIN_SCORE))
            full = RawDetections(*(torch.cat([a, b]) for a, b in
                                   zip((full.boxes, full.keypoints, full.scores),
                                       (tiled.boxes, tiled.keypoints, tiled.scores))))
        full = weighted_nms(full.boxes, full.keypoints, full.scores, FULL_RANGE.nms_threshold)
        full = _suppress_contained(full)
        # One face seen by both detectors: keep the short-range box (what FaceMesh expects).
        keep = torch.ones(len(full.scores), dtype=torch.bool, device=full.scores.device)
        if len(short.scores) and len(full.scores):
            keep = (_overlap_min(full.boxes, short.boxes) <= CONTAINED).all(dim=1)
        boxes = torch.cat([short.boxes, full.boxes[keep]]) * factor
        kps = torch.cat([short.keypoints, full.keypoints[keep]]) * factor
        scores = torch.cat([short.scores, full.scores[keep]])
        dets = [Detection(box=tuple(float(v) for v in b), score=float(s), keypoints=k.astype(np.float32))
                for b, s, k in zip(boxes.cpu().numpy(), scores.cpu().numpy(), kps.cpu().numpy())]
        return sorted(dets, key=lambda d: d.area, reverse=True)

    # ------------------------------------------------------------------ landmarks
    def _mesh_from_array(self, image: np.ndarray, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        models = self._load()
        crops = sample_rois_from_array(image, rois.cpu().numpy(), models.mesh.input_size, "replicate",
                                       self.prefilter_threshold, self.device)
        return models.mesh(crops, rois.to(self.device))

    @torch.no_grad()
    @_stable_on_cpu
    def landmarks_with_presence(self, image: np.ndarray, detection: Detection,
                                refine: bool = True) -> tuple[np.ndarray, float]:
        """Like `landmarks`, also returning FaceMesh's face-presence probability (0..1)."""
        image = self._check_image(image)
        box = torch.tensor([detection.box], dtype=torch.float32)
        kps = torch.as_tensor(np.asarray(detection.keypoints, np.float32)).unsqueeze(0)
        lms, presence = self._mesh_from_array(image, roi_from_detection(box, kps))
        if refine:
            lms, presence = self._mesh_from_array(image, roi_from_landmarks(lms.cpu()))
        return lms[0].cpu().numpy().astype(np.float32), float(presence[0])

    def landmarks(self, image: np.ndarray, detection: Detection, refine: bool = True) -> np.ndarray:
        """468 FaceMesh landmarks [468, 3] float32 in `image` pixels (z scaled like x).

        First pass: MediaPipe's ROI from the detection (eye keypoints give the rotation,
        box scaled 1.5, square). refine=True adds MediaPipe's tracking ROI: re-estimated
        from the first pass's landmarks (eye corners 33/263, scale 1.5), which centres and
        levels the face better and is what a video-mode FaceMesh returns on its 2nd frame.
        """
        return self.landmarks_with_presence(image, detection, refine)[0]

    @torch.no_grad()
    @_stable_on_cpu
    def landmarks_batch(self, frames: torch.Tensor, rois, refine: bool = False, chunk: int = 16,
                        return_presence: bool = False):
        """Landmarks of many frames at once: frames [B, H, W, 3] -> [B, 468, 3] float32 (pixels).

        frames: uint8 0..255 or float 0..1 (ComfyUI IMAGE), on any device (moved to ours).
        rois: one ROI for all frames or one per frame, each (cx, cy, w, h, rotation) in
            pixels ([5] or [B, 5]); a Detection or a [468, 2+] landmark array is turned into
            a ROI with MediaPipe's rules. Rendered talking-head frames keep the face near
            one place, so a fixed ROI from the source photo's landmarks is typical.
        refine: run a second pass with each frame's ROI re-estimated from its own output.
        chunk: frames per forward pass (bounds memory for large frames).
        """
        models = self._load()
        batch = frames.shape[0]
        rois_t = self._as_rois(rois).to(self.device)
        if rois_t.dim() == 1:
            rois_t = rois_t.expand(batch, 5)
        if rois_t.shape != (batch, 5):
            raise SonicInputError(f"rois must be [5] or [{batch}, 5], got {tuple(rois_t.shape)}")
        size = models.mesh.input_size
        height, width = int(frames.shape[1]), int(frames.shape[2])
        out_l, out_p = [], []
        for start in range(0, batch, chunk):
            frame_part = frames[start:start + chunk]
            roi = rois_t[start:start + chunk]
            for _ in range(2 if refine else 1):
                k = prefilter_factor(float(roi[:, 2:4].max()), size, self.prefilter_threshold)
                # Only the pixels the ROIs read go to the device as float (not whole frames).
                x0, y0, x1, y1 = roi_bounds(roi.cpu().numpy().astype(np.float64), k, height, width)
                part = frame_part[:, y0:y1, x0:x1].to(self.device).permute(0, 3, 1, 2).float()
                if frames.dtype != torch.uint8:
                    part = part * 255.0
                local = roi - torch.tensor([x0, y0, 0, 0, 0], dtype=roi.dtype, device=roi.device)
                crops = sample_rois(part, local, size, border="replicate", prefilter=k)
                lms, presence = models.mesh(crops, roi)
                roi = roi_from_landmarks(lms)
            out_l.append(lms)
            out_p.append(presence)
        lms = torch.cat(out_l) if out_l else torch.zeros(0, 468, 3, device=self.device)
        if return_presence:
            return lms, (torch.cat(out_p) if out_p else torch.zeros(0, device=self.device))
        return lms

    @staticmethod
    def _as_rois(rois) -> torch.Tensor:
        if isinstance(rois, Detection):
            box = torch.tensor([rois.box], dtype=torch.float32)
            kps = torch.as_tensor(np.asarray(rois.keypoints, np.float32)).unsqueeze(0)
            return roi_from_detection(box, kps)[0]
        t = torch.as_tensor(rois, dtype=torch.float32) if not isinstance(rois, torch.Tensor) else rois.float()
        if t.dim() >= 2 and t.shape[-2] == 468:  # landmarks, one set or one per frame
            return roi_from_landmarks(t)
        return t

    # ------------------------------------------------------------------ both
    def analyze(self, image: np.ndarray, face_index: int = 0, refine: bool = True) -> tuple[Detection, np.ndarray]:
        """Detect faces and return (detection, landmarks) of the `face_index`-th largest face.

        Raises FaceNotFoundError when no face is found, SonicInputError when face_index is
        out of range.
        """
        detections = self.detect(image)
        if not detections:
            raise FaceNotFoundError(NO_FACE_MESSAGE)
        if not -len(detections) <= face_index < len(detections):
            raise SonicInputError(
                f"face_index={face_index} but only {len(detections)} face(s) were found "
                f"(valid: 0..{len(detections) - 1}, 0 = largest face).")
        detection = detections[face_index]
        return detection, self.landmarks(image, detection, refine=refine)
