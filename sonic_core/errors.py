"""User-facing error types shared by all engine stages.

Errors a user can fix (bad photo, bad parameter) derive from SonicInputError, so the CLI and
the ComfyUI nodes can show their message as-is instead of a traceback.
"""
from __future__ import annotations

import os


class SonicInputError(ValueError):
    """An input the user supplied cannot be used; the message says what to do instead."""


def check_input_file(path: str, kind: str, a_file: str, item: str) -> None:
    """Raise a SonicInputError naming `path` and the fix when it is missing, a folder or empty.

    kind: 'Audio' / 'Image'; a_file: what to pass instead of a folder ('an audio file');
    item: what to re-export when empty ('recording')."""
    if not os.path.exists(path):
        raise SonicInputError(f"{kind} file not found: '{path}'. Check the path (relative paths are resolved "
                              f"from '{os.getcwd()}').")
    if os.path.isdir(path):
        raise SonicInputError(f"{kind} path '{path}' is a folder, not a file. Pass the path of {a_file}.")
    if os.path.getsize(path) == 0:
        raise SonicInputError(f"{kind} file '{path}' is empty (0 bytes). Re-export or re-download the {item}.")
