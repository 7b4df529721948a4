"""Sonic for ComfyUI: node pack entry point (ComfyUI imports this folder as a package).

V1 API: exports NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS only. Nothing heavy happens
here: no model is loaded, nothing is downloaded; the face models load on first use.
"""
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# The engine is imported as the top-level package `sonic_core`. Appended (not prepended), so
# ComfyUI's own top-level modules (e.g. its `nodes.py`) always win; ours are imported relatively.
if _HERE not in sys.path:
    sys.path.append(_HERE)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
from .nodes._runtime import register_model_folder  # noqa: E402

register_model_folder()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
