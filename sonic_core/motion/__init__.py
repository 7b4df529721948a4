"""Speech features -> per-frame motion controls (MotionTrack)."""
from ..config import MOTION_MODELS
from .loudness import loudness_motion
from .phonetic import phonetic_motion

__all__ = ["loudness_motion", "phonetic_motion", "MOTION_MODELS"]
