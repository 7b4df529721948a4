"""Mouth painters: fill the opening between the deformed lips (see `base.MouthPainter`)."""
from __future__ import annotations

from ...config import MOUTH_PAINTERS
from .base import MouthGeometry, MouthPainter, MouthSource
from .classic import ClassicPainter
from .procedural import ProceduralPainter


def make_painter(name: str) -> MouthPainter:
    """A fresh painter of one of config.MOUTH_PAINTERS."""
    painters = {"procedural": ProceduralPainter, "classic": ClassicPainter}
    if name not in painters:
        raise ValueError(f"unknown mouth painter {name!r}; choose one of {', '.join(MOUTH_PAINTERS)}")
    return painters[name]()


__all__ = ["MouthGeometry", "MouthPainter", "MouthSource", "make_painter"]
