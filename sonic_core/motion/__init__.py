"""Speech features -> per-frame motion controls (MotionTrack)."""
from .loudness import loudness_motion

__all__ = ["loudness_motion"]
