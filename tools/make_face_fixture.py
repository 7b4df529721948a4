"""Record the REAL MediaPipe runtime's face results as a test fixture.

Why: `sonic_core.face` re-implements MediaPipe's face detection + FaceMesh in PyTorch; the
only honest accuracy check is against the original runtime on real photos. MediaPipe's
runtime pins numpy<2 / protobuf<5 / jax, so it must never enter the project environment:
run this script with a throwaway venv outside the repository, e.g.

    python3 -m venv /tmp/mpvenv
    /tmp/mpvenv/bin/pip install mediapipe==0.10.21 pillow
    /tmp/mpvenv/bin/python tools/make_face_fixture.py

It writes tests/fixtures/mediapipe_landmarks.npz with, per photo `<key>`:
  <key>.mesh            [468, 3] FaceMesh static-image landmarks (first pass: ROI from the
                        detector), pixels (x*W, y*H, z*W)
  <key>.mesh_tracked    [468, 3] landmarks of a second video-mode frame of the same image,
                        i.e. with the ROI re-estimated from the first pass's landmarks
  <key>.det_short_*     short-range detector (model_selection=0): boxes [N, 4] x0,y0,x1,y1,
                        keypoints [N, 6, 2], scores [N], pixels
  <key>.det_full_*      full-range detector (model_selection=1), same layout
Images are decoded with Pillow (as the tests do) and grayscale is expanded to RGB.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PHOTOS = {
    "grace_hopper": REPO / "assets" / "grace_hopper.jpg",
    "astronaut": REPO / "assets" / "astronaut.png",
    "camera": REPO / "tests" / "data" / "camera.png",
    "coffee": REPO / "tests" / "data" / "coffee.png",
}


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def mesh_pixels(landmarks, width: int, height: int) -> np.ndarray:
    return np.array([[p.x * width, p.y * height, p.z * width] for p in landmarks.landmark], np.float32)


def detections(mp, image: np.ndarray, model_selection: int):
    h, w = image.shape[:2]
    boxes, keypoints, scores = [], [], []
    with mp.solutions.face_detection.FaceDetection(model_selection=model_selection, min_detection_confidence=0.5) as fd:
        result = fd.process(image)
    for det in result.detections or []:
        box = det.location_data.relative_bounding_box
        boxes.append([box.xmin * w, box.ymin * h, (box.xmin + box.width) * w, (box.ymin + box.height) * h])
        keypoints.append([[k.x * w, k.y * h] for k in det.location_data.relative_keypoints])
        scores.append(det.score[0])
    return (np.array(boxes, np.float32).reshape(-1, 4), np.array(keypoints, np.float32).reshape(-1, 6, 2),
            np.array(scores, np.float32))


def main() -> None:
    import mediapipe as mp  # only inside the throwaway venv

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "mediapipe_landmarks.npz")
    args = parser.parse_args()

    data: dict[str, np.ndarray] = {"mediapipe_version": np.array(mp.__version__)}
    for key, path in PHOTOS.items():
        image = load_rgb(path)
        h, w = image.shape[:2]
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=False, max_num_faces=1,
                                             min_detection_confidence=0.5) as fm:
            static = fm.process(image).multi_face_landmarks
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=False, max_num_faces=1,
                                             min_detection_confidence=0.5, min_tracking_confidence=0.5) as fm:
            fm.process(image)
            tracked = fm.process(image).multi_face_landmarks
        if static:
            data[f"{key}.mesh"] = mesh_pixels(static[0], w, h)
        if tracked:
            data[f"{key}.mesh_tracked"] = mesh_pixels(tracked[0], w, h)
        for name, selection in (("short", 0), ("full", 1)):
            boxes, kps, scores = detections(mp, image, selection)
            data[f"{key}.det_{name}_boxes"] = boxes
            data[f"{key}.det_{name}_keypoints"] = kps
            data[f"{key}.det_{name}_scores"] = scores
        print(f"{key}: {w}x{h} mesh={'yes' if static else 'no'} tracked={'yes' if tracked else 'no'} "
              f"short={len(data[f'{key}.det_short_scores'])} full={len(data[f'{key}.det_full_scores'])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **data)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
