"""Mouth painters: fill the opening between the deformed lips (see `base.MouthPainter`)."""
from __future__ import annotations

from ...config import MOUTH_PAINTERS
from .base import MouthGeometry, MouthPainter, MouthSource
from .classic import ClassicPainter
from .procedural import ProceduralPainter


def make_painter(name: "str | MouthPainter") -> MouthPainter:
    """A fresh painter of one of config.MOUTH_PAINTERS, or `name` itself when it is already a
    painter object (anything with `prepare` and `paint`: a learned decoder plugs in here)."""
    if hasattr(name, "prepare") and hasattr(name, "paint"):
        return name
    painters = {"procedural": ProceduralPainter, "classic": ClassicPainter}
    if name not in painters:
        raise ValueError(f"unknown mouth painter {name!r}; choose one of {', '.join(MOUTH_PAINTERS)}")
    return painters[name]()


__all__ = ["MouthGeometry", "MouthPainter", "MouthSource", "make_painter"]
