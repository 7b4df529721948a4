"""Dubbing: re-sync a video of a person to new speech, with mouths taken from the video itself."""
from .pipeline import Dubber, dub

__all__ = ["Dubber", "dub"]
