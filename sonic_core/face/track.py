"""Follow one face through a video: FaceMesh landmarks in every frame, smoothed over time.

MediaPipe's video mode: detect once, then take each frame's landmark ROI from the face found
in the frame before (here a chunk of frames shares the last ROI, and a second pass re-centres
each frame's ROI on its own first answer, so the face may move within a chunk). A frame whose
face-presence score drops is detected afresh; a frame with no face is marked and left alone.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SonicInputError
from .facemesh import roi_from_landmarks

MIN_PRESENCE = 0.5  # FaceMesh's own threshold for "a face is in this ROI"
SMOOTH_FRAMES = 0.7  # sigma, frames: removes landmark jitter (about half a pixel) without lagging motion


@dataclass
class FaceTrack:
    landmarks: np.ndarray  # [N,468,3] float32 frame pixels (smoothed); undefined where not found
    found: np.ndarray  # [N] bool: a face was tracked in this frame

    @property
    def num_frames(self) -> int:
        return int(self.found.shape[0])


def _pick(detections, face_index: int, near: np.ndarray | None):
    """The face to follow: by size rank on first sight, later the one nearest where it was."""
    if not detections:
        return None
    if near is None:
        if face_index >= len(detections):
            return None
        return detections[face_index]
    centres = np.array([[(d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2] for d in detections])
    sizes = np.array([max(d.box[2] - d.box[0], d.box[3] - d.box[1]) for d in detections])
    dist = np.linalg.norm(centres - near[:2], axis=1)
    best = int(dist.argmin())
    return detections[best] if dist[best] < max(sizes[best], near[2]) else None


def track_faces(frames: Iterable[np.ndarray], analyzer, face_index: int = 0, chunk: int | None = None,
                refine: bool | None = None, progress: Callable[[int], None] | None = None,
                name: str = "the video") -> FaceTrack:
    """Landmarks of one face in every frame of `frames` (RGB uint8 arrays of one size).

    chunk, refine: frames per FaceMesh batch, and whether each frame gets a second pass with
    its ROI re-centred on its first answer. The default suits the analyzer's device: on a GPU
    8 frames share a ROI and are refined (batches keep it busy); on a CPU 4 frames share the
    ROI of the frame before them, one pass each (half the work; landmarks within about 0.3 px
    of the refined ones on a 130 px face).

    face_index: which face to follow when several are in view (0 = the largest on first sight);
    afterwards the tracker keeps to the same person by position. Raises SonicInputError when
    no frame shows that face."""
    gpu = torch.device(analyzer.device).type != "cpu"
    chunk = chunk or (8 if gpu else 4)
    refine = gpu if refine is None else refine
    lms_all: list[np.ndarray] = []
    found: list[bool] = []
    roi = None  # [5] ROI for the next chunk, from the last tracked frame
    last = None  # (cx, cy, size) of the face in the last tracked frame
    seen_faces = 0
    buf: list[np.ndarray] = []

    def detect_one(rgb: np.ndarray):
        nonlocal seen_faces
        dets = analyzer.detect(rgb)
        seen_faces = max(seen_faces, len(dets))
        det = _pick(dets, face_index, last)
        if det is None:
            return None
        lm, presence = analyzer.landmarks_with_presence(rgb, det)
        return lm if presence >= MIN_PRESENCE else None

    def flush():
        nonlocal roi, last
        if not buf:
            return
        i = 0
        while i < len(buf):
            if roi is None:
                lm = detect_one(buf[i])
                lms_all.append(lm if lm is not None else np.zeros((468, 3), np.float32))
                found.append(lm is not None)
                if lm is not None:
                    roi = roi_from_landmarks(torch.as_tensor(lm[None]))[0]
                    last = _where(lm)
                i += 1
                continue
            part = torch.from_numpy(np.stack(buf[i:]))
            lms, presence = analyzer.landmarks_batch(part, roi, refine=refine, chunk=len(buf), return_presence=True)
            lms, presence = lms.cpu().numpy().astype(np.float32), presence.cpu().numpy()
            for k in range(len(lms)):
                if presence[k] < MIN_PRESENCE:
                    roi = None  # lost: detect afresh from this frame on
                    i += k
                    break
                lms_all.append(lms[k])
                found.append(True)
                last = _where(lms[k])
            else:
                roi = roi_from_landmarks(torch.as_tensor(lms[-1:]))[0]
                i = len(buf)
        if progress is not None:
            progress(len(found))
        buf.clear()

    for rgb in frames:
        buf.append(rgb)
        if len(buf) >= chunk:
            flush()
    flush()
    found_a = np.asarray(found, bool)
    if not found_a.any():
        if face_index > 0 and seen_faces:
            raise SonicInputError(f"face_index={face_index} but {name} shows at most {seen_faces} face(s) at once "
                                  f"(valid: 0..{seen_faces - 1}, 0 = the largest face).")
        raise SonicInputError(f"No face was found in any frame of {name}. Use a video in which one face is clearly "
                              "visible, roughly frontal and at least about 80 pixels across.")
    return FaceTrack(smooth_landmarks(np.stack(lms_all), found_a), found_a)


def _where(lm: np.ndarray) -> np.ndarray:
    lo, hi = lm[:, :2].min(0), lm[:, :2].max(0)
    return np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, float((hi - lo).max())])


def smooth_landmarks(lms: np.ndarray, found: np.ndarray, sigma: float = SMOOTH_FRAMES) -> np.ndarray:
    """Zero-phase Gaussian smoothing over time, within each run of tracked frames."""
    from scipy.ndimage import gaussian_filter1d

    out = lms.copy()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], found.astype(np.int8), [0]])))
    for s, e in zip(edges[::2], edges[1::2]):
        if e - s > 1:
            out[s:e] = gaussian_filter1d(lms[s:e], sigma, axis=0, mode="nearest")
    return out
