"""Face stage vs. the real MediaPipe runtime (fixture recorded by tools/make_face_fixture.py).

Errors are measured in % of the inter-ocular distance (outer eye corners 33-263), the usual
normalisation for landmark accuracy.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sonic_core.errors import SonicInputError
from sonic_core.face import NO_FACE_MESSAGE, FaceNotFoundError, roi_from_landmarks
from sonic_core.types import Detection

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "mediapipe_landmarks.npz"
PHOTOS = {
    "grace_hopper": REPO / "assets" / "grace_hopper.jpg",
    "astronaut": REPO / "assets" / "astronaut.png",
    "camera": REPO / "tests" / "data" / "camera.png",
}
MAX_ERROR_PERCENT = 1.5


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def iod(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[33, :2] - landmarks[263, :2]))


def error_percent(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.linalg.norm(ours[:, :2] - ref[:, :2], axis=1) / iod(ref) * 100.0


@pytest.fixture(scope="session")
def mp_ref():
    return dict(np.load(FIXTURE))


# ---------------------------------------------------------------------------- models
def test_bundle_metadata_and_topology(models_dir):
    from safetensors import safe_open

    from sonic_core.models import FACE_MODELS_FILE, load_face_topology

    with safe_open(str(models_dir / FACE_MODELS_FILE), framework="np") as fh:
        meta = fh.metadata()
    assert meta["license"] == "Apache-2.0"
    assert meta["source_version"] == "0.10.21"
    assert len(meta["source_sha256"]) == 64
    tris = load_face_topology(models_dir)
    assert tris.shape == (852, 3) and tris.dtype == np.int64
    assert tris.min() >= 0 and tris.max() < 468
    # Each undirected edge is shared by at most two triangles, traversed in opposite
    # directions: a consistently oriented 2-manifold with holes.
    directed = [(int(t[k]), int(t[(k + 1) % 3])) for t in tris for k in range(3)]
    assert len(set(directed)) == len(directed)


def test_triangles_counter_clockwise_on_frontal_face(models_dir, mp_ref):
    from sonic_core.models import load_face_topology

    tris = load_face_topology(models_dir)
    p = mp_ref["grace_hopper.mesh"][:, :2]
    a, b, c = p[tris[:, 0]], p[tris[:, 1]], p[tris[:, 2]]
    cross = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]
    # y points down, so counter-clockwise on screen is a negative cross product. The few
    # exceptions are folded triangles at the silhouette of the slightly turned head.
    assert (cross < 0).mean() > 0.95


def test_offline_error_names_the_remedy(tmp_path, monkeypatch):
    from sonic_core import models

    monkeypatch.delenv("SONIC_MEDIAPIPE_WHEEL", raising=False)

    def no_network(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: Could not find a version (network)")

    monkeypatch.setattr(models.subprocess, "run", no_network)
    with pytest.raises(models.ModelFetchError) as err:
        models.ensure_face_models(tmp_path / "empty")
    message = str(err.value)
    assert "SONIC_MEDIAPIPE_WHEEL" in message and "fetch-models" in message
    assert not (tmp_path / "empty" / models.FACE_MODELS_FILE).exists()


def test_default_model_dir_honours_env(monkeypatch, tmp_path):
    from sonic_core.models import default_model_dir

    monkeypatch.setenv("SONIC_MODELS_DIR", str(tmp_path))
    assert default_model_dir() == tmp_path
    monkeypatch.delenv("SONIC_MODELS_DIR")
    assert default_model_dir() == Path.home() / ".cache" / "sonic_core" / "models"


# ---------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("key", list(PHOTOS))
def test_detection_matches_mediapipe(analyzer, mp_ref, key):
    dets = analyzer.detect(load_rgb(PHOTOS[key]))
    assert len(dets) == 1
    ref_box = mp_ref[f"{key}.det_short_boxes"][0]
    size = ref_box[2] - ref_box[0]
    assert np.abs(np.array(dets[0].box) - ref_box).max() < 0.02 * size
    assert np.abs(dets[0].keypoints - mp_ref[f"{key}.det_short_keypoints"][0]).max() < 0.02 * size
    assert abs(dets[0].score - mp_ref[f"{key}.det_short_scores"][0]) < 0.02


@pytest.mark.parametrize("key", list(PHOTOS))
def test_landmarks_match_mediapipe(analyzer, mp_ref, key):
    image = load_rgb(PHOTOS[key])
    det = analyzer.detect(image)[0]
    first = analyzer.landmarks(image, det, refine=False)
    refined = analyzer.landmarks(image, det, refine=True)
    assert first.shape == (468, 3) and first.dtype == np.float32
    # First pass = MediaPipe static-image mode; refined = MediaPipe's 2nd tracked frame.
    for ours, ref in ((first, mp_ref[f"{key}.mesh"]), (refined, mp_ref[f"{key}.mesh_tracked"])):
        err = error_percent(ours, ref)
        print(f"{key}: mean {err.mean():.3f}% p95 {np.percentile(err, 95):.3f}% max {err.max():.3f}%")
        assert err.mean() < MAX_ERROR_PERCENT
        assert np.percentile(err, 95) < MAX_ERROR_PERCENT
        # z is relative depth scaled like x: same scale as MediaPipe's
        assert np.abs(ours[:, 2] - ref[:, 2]).mean() < 0.02 * iod(ref)


def test_analyze_returns_largest_face(analyzer, mp_ref):
    det, lms = analyzer.analyze(load_rgb(PHOTOS["grace_hopper"]))
    assert isinstance(det, Detection)
    assert np.percentile(error_percent(lms, mp_ref["grace_hopper.mesh_tracked"]), 95) < MAX_ERROR_PERCENT


# ---------------------------------------------------------------------------- robustness
def test_no_face_raises_clear_error(analyzer):
    coffee = load_rgb(REPO / "tests" / "data" / "coffee.png")
    assert analyzer.detect(coffee) == []
    with pytest.raises(FaceNotFoundError) as err:
        analyzer.analyze(coffee)
    assert isinstance(err.value, SonicInputError) and isinstance(err.value, ValueError)
    assert str(err.value) == NO_FACE_MESSAGE
    assert "crop" in NO_FACE_MESSAGE and "clearly visible" in NO_FACE_MESSAGE


def test_face_index_out_of_range(analyzer):
    with pytest.raises(SonicInputError, match="only 1 face"):
        analyzer.analyze(load_rgb(PHOTOS["grace_hopper"]), face_index=2)


def test_two_faces_largest_first(analyzer, mp_ref):
    """A downscaled Grace Hopper pasted into the astronaut photo's lower-right corner."""
    composite = Image.open(PHOTOS["astronaut"]).convert("RGB")
    scale = 0.4
    small = Image.open(PHOTOS["grace_hopper"]).convert("RGB").resize((int(512 * scale), int(600 * scale)),
                                                                     Image.LANCZOS)
    offset = np.array([512 - small.size[0], 512 - small.size[1]], np.float32)
    composite.paste(small, tuple(int(v) for v in offset))
    image = np.asarray(composite)
    dets = analyzer.detect(image)
    assert len(dets) == 2
    assert dets[0].area > dets[1].area
    astro_box = mp_ref["astronaut.det_short_boxes"][0]
    assert np.abs(np.array(dets[0].box) - astro_box).max() < 3
    # The small face: compare landmarks with MediaPipe's full-size ones, scaled down.
    ref = mp_ref["grace_hopper.mesh_tracked"][:, :2] * np.array([small.size[0] / 512, small.size[1] / 600]) + offset
    assert np.percentile(error_percent(analyzer.landmarks(image, dets[1]), ref), 95) < 5.0
    second, _ = analyzer.analyze(image, face_index=1)
    assert second.box == dets[1].box


def test_small_face_in_large_canvas(analyzer, mp_ref):
    """A ~95-pixel face in a 3000x3000 photo is only found by the tiled full-range pass."""
    canvas = Image.new("RGB", (3000, 3000), (120, 130, 140))
    small = Image.open(PHOTOS["grace_hopper"]).convert("RGB").resize((256, 300), Image.LANCZOS)
    canvas.paste(small, (1700, 900))
    image = np.asarray(canvas)
    dets = analyzer.detect(image)
    assert len(dets) == 1
    ref = mp_ref["grace_hopper.mesh_tracked"] * 0.5 + np.array([1700, 900, 0], np.float32)
    lms = analyzer.landmarks(image, dets[0])
    assert np.percentile(error_percent(lms, ref), 95) < 5.0


def test_huge_image_is_downscaled_for_detection(analyzer, mp_ref):
    """8000x8000 photo: detection on a box-averaged copy, landmarks at full resolution."""
    image = np.full((8000, 8000, 3), 100, np.uint8)
    big = Image.open(PHOTOS["grace_hopper"]).convert("RGB").resize((2048, 2400), Image.BICUBIC)
    image[3000:5400, 2500:4548] = np.asarray(big)
    dets = analyzer.detect(image)
    assert len(dets) == 1
    lms = analyzer.landmarks(image, dets[0])
    ref = mp_ref["grace_hopper.mesh_tracked"] * 4 + np.array([2500, 3000, 0], np.float32)
    err = error_percent(lms, ref)
    assert err.mean() < 2.0 and np.percentile(err, 95) < 3.0


@pytest.mark.parametrize("bad", [
    np.zeros((64, 64), np.uint8),  # grayscale 2-D
    np.zeros((64, 64, 4), np.uint8),  # RGBA
    np.zeros((64, 64, 3), np.uint16),  # 16-bit
    np.zeros((64, 64, 3), np.float32),  # float
])
def test_non_rgb8_input_rejected_with_hint(analyzer, bad):
    with pytest.raises(SonicInputError, match="uint8"):
        analyzer.detect(bad)


def test_grayscale_photo_after_conversion(analyzer):
    """camera.png is 8-bit grayscale: converted to RGB by the caller, it works."""
    gray = np.asarray(Image.open(PHOTOS["camera"]))
    assert gray.ndim == 2
    assert len(analyzer.detect(np.repeat(gray[:, :, None], 3, axis=2))) == 1


# ---------------------------------------------------------------------------- batch
def test_landmarks_batch_matches_single(analyzer):
    image = load_rgb(PHOTOS["grace_hopper"])
    det = analyzer.detect(image)[0]
    single_first = analyzer.landmarks(image, det, refine=False)
    single_refined = analyzer.landmarks(image, det, refine=True)
    # Frames of a "video": the photo shifted right by 0..3 pixels (edge replicated).
    shifts = [0, 1, 2, 3]
    frames = np.stack([np.concatenate([np.repeat(image[:, :1], s, axis=1), image[:, :image.shape[1] - s]], axis=1)
                       for s in shifts])
    frames_t = torch.from_numpy(frames)
    out = analyzer.landmarks_batch(frames_t, det)  # one fixed ROI from the detection
    assert out.shape == (4, 468, 3) and out.dtype == torch.float32
    assert np.abs(out[0].numpy() - single_first).max() < 0.05
    # A fixed ROI: landmarks follow the face up to the model's own translation noise.
    moved = (out[:, :, 0] - out[0:1, :, 0]).mean(dim=1).numpy()
    assert np.allclose(moved, shifts, atol=0.3)
    # float 0..1 input (ComfyUI IMAGE) and per-frame ROIs + refinement
    refined, presence = analyzer.landmarks_batch(frames_t.float() / 255.0, det, refine=True, return_presence=True,
                                                 chunk=3)
    assert np.abs(refined[0].numpy() - single_refined).max() < 0.05
    assert (presence > 0.9).all()
    per_frame = roi_from_landmarks(refined)
    again = analyzer.landmarks_batch(frames_t, per_frame)
    assert torch.allclose(again, analyzer.landmarks_batch(frames_t, per_frame, chunk=1), atol=1e-3)
