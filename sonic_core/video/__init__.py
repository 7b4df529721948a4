"""Video output: GPU-side colour conversion and a streaming, atomic MP4 (H.264 + AAC) writer."""
from .colour import rgb_to_yuv420p, yuv420p_to_rgb
from .writer import Mp4Writer, as_fraction

__all__ = ["Mp4Writer", "as_fraction", "rgb_to_yuv420p", "yuv420p_to_rgb"]
