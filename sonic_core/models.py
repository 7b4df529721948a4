"""Model cache: where converted weights live and how they get there.

The face stage uses MediaPipe's face detector and FaceMesh weights (Apache-2.0). They ship
inside the `mediapipe==0.10.21` wheel, whose runtime we must not install (it pins numpy<2,
protobuf<5 and jax, which breaks ComfyUI). So `ensure_face_models` fetches the wheel with
`pip download` (no install, no code execution), converts the .tflite graphs to float32
PyTorch tensors once, and stores ONE file `mediapipe_face.safetensors` in the model dir.

Environment variables:
  SONIC_MODELS_DIR       model cache folder (default ~/.cache/sonic_core/models)
  SONIC_MEDIAPIPE_WHEEL  path to an already downloaded mediapipe-0.10.21 wheel; used instead
                         of `pip download` (offline machines: copy the wheel over)
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

FACE_MODELS_FILE = "mediapipe_face.safetensors"
MEDIAPIPE_VERSION = "0.10.21"
# Any platform's wheel holds the same model files; pinning one makes the download the same
# file everywhere (and lets it work on Pythons the release has no wheel for).
_WHEEL_PIN = ["--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
              "--implementation", "cp", "--abi", "cp311"]
# sha256 of mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl as published on PyPI.
_KNOWN_WHEEL_SHA256 = {
    "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl":
        "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
}

Log = Callable[[str], None]


class ModelFetchError(RuntimeError):
    """The model files could not be obtained or converted; the message says what to do."""


def default_model_dir() -> Path:
    """$SONIC_MODELS_DIR if set, else ~/.cache/sonic_core/models."""
    env = os.environ.get("SONIC_MODELS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sonic_core" / "models"


def face_models_path(model_dir: str | os.PathLike | None = None) -> Path:
    return Path(model_dir).expanduser() if model_dir else default_model_dir()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _offline_hint() -> str:
    return ("Either connect this machine to PyPI, or download the wheel elsewhere "
            f"(`pip download --no-deps --only-binary=:all: mediapipe=={MEDIAPIPE_VERSION}`) and set "
            "SONIC_MEDIAPIPE_WHEEL=/path/to/that.whl, or run `python -m sonic_core fetch-models` on a "
            f"connected machine and copy {FACE_MODELS_FILE} into the model folder "
            "(SONIC_MODELS_DIR, default ~/.cache/sonic_core/models).")


def _download_wheel(dest: Path, log: Log) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           *_WHEEL_PIN, f"mediapipe=={MEDIAPIPE_VERSION}", "-d", str(dest)]
    log(f"downloading mediapipe=={MEDIAPIPE_VERSION} wheel (~35 MB, weights only, not installed)")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelFetchError(f"could not run pip to download the MediaPipe wheel ({exc}). {_offline_hint()}") from exc
    wheels = sorted(dest.glob("mediapipe-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        raise ModelFetchError("pip could not download the MediaPipe wheel that holds the face models "
                              f"({' | '.join(tail)}). {_offline_hint()}")
    return wheels[0]


def ensure_face_models(model_dir: str | os.PathLike | None = None, log: Log | None = None) -> Path:
    """Return the path of mediapipe_face.safetensors, building it first if it is missing.

    Building: take the wheel from $SONIC_MEDIAPIPE_WHEEL or `pip download` it into a temp
    dir, convert it (see sonic_core.face.convert), write to a temp file in the model dir and
    rename atomically, so concurrent callers never see a half-written file.
    """
    log = log or (lambda _msg: None)
    folder = face_models_path(model_dir)
    target = folder / FACE_MODELS_FILE
    if target.is_file():
        return target
    from safetensors.numpy import save_file

    from .face.convert import build_bundle

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sonic_mp_") as tmp:
        local = os.environ.get("SONIC_MEDIAPIPE_WHEEL")
        if local:
            wheel = Path(local).expanduser()
            if not wheel.is_file():
                raise ModelFetchError(f"SONIC_MEDIAPIPE_WHEEL={local} is not a file. {_offline_hint()}")
            log(f"using local MediaPipe wheel {wheel}")
        else:
            wheel = _download_wheel(Path(tmp), log)
        sha = _sha256(wheel)
        expected = _KNOWN_WHEEL_SHA256.get(wheel.name)
        if expected and sha != expected:
            raise ModelFetchError(f"{wheel.name} has sha256 {sha}, expected {expected}: the file is corrupt "
                                  "or not the PyPI release. Delete it and download again.")
        log(f"converting face models from {wheel.name}")
        try:
            tensors, metadata = build_bundle(wheel)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelFetchError(f"could not convert the face models from {wheel}: {exc}. "
                                  f"Use the mediapipe=={MEDIAPIPE_VERSION} wheel.") from exc
        metadata.update(source_version=wheel.name.split("-")[1], source_sha256=sha)
        fd, tmp_path = tempfile.mkstemp(prefix=FACE_MODELS_FILE + ".", suffix=".tmp", dir=folder)
        os.close(fd)
        try:
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp_path, metadata=metadata)
            os.replace(tmp_path, target)
        finally:
            if os.path.exists(tmp_path):
                os.unlink(tmp_path)
    log(f"face models ready: {target}")
    return target


def load_face_bundle(model_dir: str | os.PathLike | None = None, device: str = "cpu"):
    """Load (tensors, metadata) of the face bundle, building it if needed."""
    import safetensors
    import safetensors.torch

    path = ensure_face_models(model_dir)
    tensors = safetensors.torch.load_file(str(path), device=str(device))
    with safetensors.safe_open(str(path), framework="pt") as fh:
        metadata = dict(fh.metadata() or {})
    return tensors, metadata


def load_face_topology(model_dir: str | os.PathLike | None = None) -> np.ndarray:
    """FaceMesh triangles [T, 3] int64 (852 of them), counter-clockwise on screen for a frontal face.

    Holes are left at the mouth and eyes (no triangles span them).
    """
    from safetensors import safe_open

    path = ensure_face_models(model_dir)
    with safe_open(str(path), framework="np") as fh:
        return fh.get_tensor("facemesh_triangles").astype(np.int64)
