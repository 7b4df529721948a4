"""Face stage: MediaPipe face detection + 468-point FaceMesh, ported to PyTorch.

Import-light on purpose (ComfyUI imports node packs at start-up): the heavy modules load
on first attribute access.

    from sonic_core.face import FaceAnalyzer, FaceNotFoundError
    analyzer = FaceAnalyzer(device="cuda")
    detection, landmarks = analyzer.analyze(rgb_uint8_image)
"""
from __future__ import annotations

from ..errors import SonicInputError


class FaceNotFoundError(SonicInputError):
    """No usable face in the image; the message tells the user what photo to use instead."""


_LAZY = {
    "FaceAnalyzer": ".analyzer",
    "NO_FACE_MESSAGE": ".analyzer",
    "roi_from_detection": ".facemesh",
    "roi_from_landmarks": ".facemesh",
}

__all__ = ["FaceAnalyzer", "FaceNotFoundError", "NO_FACE_MESSAGE", "SonicInputError",
           "roi_from_detection", "roi_from_landmarks"]


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
