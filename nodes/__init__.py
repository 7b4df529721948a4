"""Sonic node classes (ComfyUI V1 API). Thin glue: every computation lives in sonic_core."""
from __future__ import annotations

from .audio import SonicTH_AudioPreData
from .face import SonicTH_Config, SonicTH_FaceLoader
from .motion import SonicTH_Postprocess, SonicTH_Sampler
from .render import SonicTH_Render, SonicTH_SaveMP4
from .video import SonicTH_DubVideo

NODE_CLASS_MAPPINGS = {
    "SonicTH_FaceLoader": SonicTH_FaceLoader,
    "SonicTH_AudioPreData": SonicTH_AudioPreData,
    "SonicTH_Config": SonicTH_Config,
    "SonicTH_Sampler": SonicTH_Sampler,
    "SonicTH_Postprocess": SonicTH_Postprocess,
    "SonicTH_Render": SonicTH_Render,
    "SonicTH_SaveMP4": SonicTH_SaveMP4,
    "SonicTH_DubVideo": SonicTH_DubVideo,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "SonicTH_FaceLoader": "Sonic Face Loader",
    "SonicTH_AudioPreData": "Sonic Audio PreData",
    "SonicTH_Config": "Sonic Config",
    "SonicTH_Sampler": "Sonic Sampler",
    "SonicTH_Postprocess": "Sonic Postprocess (lip align / smooth)",
    "SonicTH_Render": "Sonic Render (frames + audio)",
    "SonicTH_SaveMP4": "Sonic Save MP4 (streaming)",
    "SonicTH_DubVideo": "Sonic Dub Video (video + new speech -> MP4)",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
