"""Speech features -> per-frame motion controls (MotionTrack)."""
from .loudness import loudness_motion
from .phonetic import phonetic_motion

MOTION_MODELS = ("phonetic", "loudness")

__all__ = ["loudness_motion", "phonetic_motion", "MOTION_MODELS"]
