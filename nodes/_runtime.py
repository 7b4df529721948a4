"""Shared glue for the Sonic nodes: logger, models folder, device, cached face analyzer,
per-chunk progress/cancel hook and user-error wrapping. No model maths here.

Everything touching ComfyUI (`folder_paths`, `comfy.*`) is imported lazily inside functions,
so the pack imports (and its tests run) without a ComfyUI install.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from pathlib import Path

log = logging.getLogger("sonic_comfy")

CATEGORY = "Sonic"
FOLDER = "sonic"  # models/sonic, or `sonic: path` in extra_model_paths.yaml
PREFIX = "SonicTH_"
FACE = "SONICTH_FACE"
SPEECH = "SONICTH_SPEECH"
CONFIG = "SONICTH_CONFIG"
MOTION = "SONICTH_MOTION"

_analyzers: dict[tuple[str, str], object] = {}
_lock = threading.Lock()


def _folder_paths():
    try:
        import folder_paths  # ComfyUI
    except ImportError:
        return None
    return folder_paths


def register_model_folder() -> None:
    """Register ComfyUI's `sonic` model folder (models/sonic) unless it is there already. Cheap."""
    fp = _folder_paths()
    if fp is None:
        return
    default = os.path.join(fp.models_dir, FOLDER)
    if FOLDER not in fp.folder_names_and_paths or default not in fp.get_folder_paths(FOLDER):
        fp.add_model_folder_path(FOLDER, default)


def models_dir() -> Path:
    """Where the face models are read (and, on first use, converted to).

    In ComfyUI: the first `sonic` folder (models/sonic and any from extra_model_paths.yaml) that
    already holds the face models, else the first `sonic` folder. Outside ComfyUI: sonic_core's
    default ($SONIC_MODELS_DIR or ~/.cache/sonic_core/models).
    """
    from sonic_core.models import FACE_MODELS_FILE, default_model_dir

    fp = _folder_paths()
    if fp is None:
        return default_model_dir()
    register_model_folder()
    paths = [Path(p) for p in fp.get_folder_paths(FOLDER)]
    for p in paths:
        if (p / FACE_MODELS_FILE).is_file():
            return p
    return paths[0]


def device():
    """ComfyUI's torch device when running inside ComfyUI (honours --cpu), else CUDA if available."""
    try:
        import comfy.model_management as mm

        return mm.get_torch_device()
    except Exception:  # not in ComfyUI
        from sonic_core.pipeline import resolve_device

        return resolve_device("auto")


NO_DOWNLOAD_ENV = "SONIC_NO_DOWNLOAD"  # set to 1 on locked-down servers: never pip-download the face models


def _fetch_reporter(model_dir: Path):
    """The log of `ensure_face_models`: when the face models must be fetched, that is said in the
    UI (a progress bar and the log), or refused with where to put the file if downloads are off."""
    from sonic_core.models import FACE_MODELS_FILE, MEDIAPIPE_VERSION

    if (Path(model_dir) / FACE_MODELS_FILE).is_file():
        return log.info
    if os.environ.get(NO_DOWNLOAD_ENV, "").strip() not in ("", "0") and not os.environ.get("SONIC_MEDIAPIPE_WHEEL"):
        raise SonicNodeError(
            f"The face models are not installed and downloads are off ({NO_DOWNLOAD_ENV} is set). Copy "
            f"{FACE_MODELS_FILE} (made by `python -m sonic_core fetch-models` on any machine) into {model_dir}, or set "
            f"SONIC_MEDIAPIPE_WHEEL to a downloaded mediapipe-{MEDIAPIPE_VERSION} wheel.")
    try:
        import comfy.utils

        bar = comfy.utils.ProgressBar(3)
    except Exception:
        bar = None
    steps = iter(range(1, 4))
    log.warning("Sonic: first use: fetching the face models into %s (pip download of the mediapipe wheel, "
                "~35 MB, not installed; set %s=1 to forbid it)", model_dir, NO_DOWNLOAD_ENV)

    def report(msg: str) -> None:
        log.info("Sonic: %s", msg)
        if bar is not None:
            bar.update_absolute(next(steps, 3), 3)

    return report


def face_analyzer(dev=None, model_dir=None):
    """One FaceAnalyzer per (device, models folder), so repeated prompts do not reload models."""
    from sonic_core.face import FaceAnalyzer
    from sonic_core.models import ensure_face_models

    dev = dev if dev is not None else device()
    model_dir = Path(model_dir) if model_dir is not None else models_dir()
    key = (str(dev), str(model_dir))
    with _lock:
        an = _analyzers.get(key)
        if an is None:
            ensure_face_models(model_dir, log=_fetch_reporter(model_dir))
            log.info("loading face models from %s on %s", model_dir, dev)
            an = _analyzers[key] = FaceAnalyzer(model_dir=model_dir, device=dev)
        return an


def chunk_hook(total: int):
    """Per-chunk callback: raises if the user pressed Cancel, then moves ComfyUI's progress bar."""
    try:
        import comfy.utils

        bar = comfy.utils.ProgressBar(total)
    except Exception:
        bar = None
    try:
        import comfy.model_management as mm

        check = mm.throw_exception_if_processing_interrupted
    except Exception:
        check = None

    def hook(done: int, total_: int) -> None:
        if check is not None:
            check()
        if bar is not None:
            bar.update_absolute(done, total_)

    if check is not None:
        check()
    return hook


from sonic_core.errors import SonicInputError  # noqa: E402  (light: no torch)


class SonicNodeError(SonicInputError):
    """What a Sonic node raises for anything the user can fix; the message says what to do."""


# ComfyUI shows "<module>.<class>: message"; custom node modules are named by their full path.
SonicNodeError.__module__ = "sonic"


PACK = Path(__file__).resolve().parent.parent
# import name -> pip name of what requirements.txt installs
REQUIRED_MODULES = {"av": "av", "safetensors": "safetensors", "tflite": "tflite", "PIL": "pillow", "scipy": "scipy",
                    "pocketsphinx": "pocketsphinx", "silero_vad": "silero-vad", "numpy": "numpy", "torch": "torch"}


def user_errors(fn):
    """Re-raise engine input/model errors with just their message (no deep engine traceback)."""
    from sonic_core.models import ModelFetchError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (SonicInputError, ModelFetchError) as e:
            msg = str(e)
        except ImportError as e:
            missing = (getattr(e, "name", None) or "").split(".")[0]
            if missing not in REQUIRED_MODULES:
                raise
            msg = (f"Sonic needs the Python package '{REQUIRED_MODULES[missing]}', which is not installed in "
                   f"ComfyUI's Python. Install the pack's requirements with that Python: "
                   f"{sys.executable} -m pip install -r {PACK / 'requirements.txt'} , then restart ComfyUI.")
        log.warning("%s: %s", getattr(fn, "__qualname__", "Sonic"), msg)
        raise SonicNodeError(msg) from None

    return wrapper


@functools.lru_cache(maxsize=1)
def config_docs() -> dict[str, str]:
    from sonic_core.config import GenerateConfig

    return GenerateConfig.field_docs()


def setting(name: str, **override) -> tuple:
    """ComfyUI input for a GenerateConfig setting: type, default, accepted range and tooltip all
    come from sonic_core/config.py (declared once); `override` changes what a node needs otherwise."""
    from sonic_core.config import CHOICES, INT_SETTINGS, RANGES, GenerateConfig

    default = getattr(GenerateConfig(), name)
    spec = {"default": default, "tooltip": config_docs().get(name, "")}
    if name in CHOICES:
        kind = list(CHOICES[name])
    elif isinstance(default, bool):
        kind = "BOOLEAN"
    else:
        kind = "INT" if name in INT_SETTINGS else "FLOAT"
        spec.update(RANGES[name].widget())
    spec.update(override)
    return (kind, spec)


# ---------------------------------------------------------------- speech models (models/audio_encoders)
SPEECH_MODEL_FOLDER = "audio_encoders"


def speech_model_choices() -> list[str]:
    """'none' + the .safetensors files of ComfyUI's models/audio_encoders (Hugging Face folders
    inside it show up as their model.safetensors). Cheap: a directory listing."""
    fp = _folder_paths()
    names = []
    if fp is not None and SPEECH_MODEL_FOLDER in fp.folder_names_and_paths:
        names = [n for n in fp.get_filename_list(SPEECH_MODEL_FOLDER) if n.lower().endswith(".safetensors")]
    return ["none", *sorted(names)]


def speech_model_path(name: str) -> str | None:
    """Path to load for a combo choice: the Hugging Face folder when the file sits beside a
    config.json (its vocab.json and settings come with it), else the file itself."""
    if not name or name == "none":
        return None
    fp = _folder_paths()
    if fp is None:
        return name
    full = Path(fp.get_full_path_or_raise(SPEECH_MODEL_FOLDER, name))
    return str(full.parent if (full.parent / "config.json").is_file() else full)

