"""Sonic engine: one portrait photo + one speech recording -> a lip-synced talking-head MP4.

Import-light: heavy modules (torch models, PyAV) load when first used.

    import sonic_core
    result = sonic_core.generate("face.jpg", "speech.wav", "out.mp4", min_resolution=512)
    print(result.summary())
"""
from __future__ import annotations

from .config import GenerateConfig
from .errors import SonicInputError

__version__ = "0.1.0"
__all__ = ["generate", "GenerateConfig", "SonicInputError", "__version__"]


def generate(*args, **kwargs):
    """See `sonic_core.pipeline.generate`."""
    from .pipeline import generate as _generate

    return _generate(*args, **kwargs)
