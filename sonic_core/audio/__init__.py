"""Speech input: decoding (PyAV) and analysis."""
from .decode import audio_from_array, fit_duration, load_audio, resample_clip

__all__ = ["load_audio", "fit_duration", "audio_from_array", "resample_clip"]
