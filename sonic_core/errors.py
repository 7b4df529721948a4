"""User-facing error types shared by all engine stages.

Errors a user can fix (bad photo, bad parameter) derive from SonicInputError, so the CLI and
the ComfyUI nodes can show their message as-is instead of a traceback.
"""
from __future__ import annotations


class SonicInputError(ValueError):
    """An input the user supplied cannot be used; the message says what to do instead."""
