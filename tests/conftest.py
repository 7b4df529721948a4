"""Shared fixtures: the face model cache and a face analyzer (converted once per session)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "assets"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    from sonic_core.models import ensure_face_models

    path = Path(os.environ.get("SONIC_MODELS_DIR") or REPO / ".cache" / "models")
    ensure_face_models(path)
    return path


@pytest.fixture(scope="session")
def analyzer(models_dir):
    from sonic_core.face import FaceAnalyzer

    return FaceAnalyzer(model_dir=models_dir, device="cpu")
