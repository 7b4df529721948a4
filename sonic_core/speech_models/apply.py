"""Hand a speech model's output to the motion stage (the engine's side of issue #4).

`attach` fills these `SpeechFeatures` fields: ``viseme_segments`` ([(start_s, end_s, viseme)],
which the motion model (`motion/phonetic.py`) uses instead of pocketsphinx's phones when a CTC
head with a phoneme or letter vocabulary produced them, else left None with the reason in
``speech_model_note``) and, for any checkpoint, ``speech_model_kind`` and
``speech_model_features`` ([num_frames, C] hidden states at the video rate), kept for a
learned motion model; the built-in model does not read them.
"""
from __future__ import annotations

import logging

from ..types import SpeechFeatures
from .output import SpeechModelOutput
from .visemes import unavailable_reason, visemes_from_ctc

log = logging.getLogger(__name__)


def attach(speech: SpeechFeatures, output: SpeechModelOutput) -> str | None:
    """Store the model's per-frame features (and its visemes when it can give them) on `speech`.

    Returns None when the visemes will drive the mouth, else the reason they cannot (no CTC
    head, no or unusable vocabulary); the caller then keeps the built-in recogniser.
    """
    speech.speech_model_features = output.at_fps(speech.num_frames, speech.fps)
    speech.speech_model_kind = output.kind
    reason = unavailable_reason(output)
    if reason is None:
        speech.viseme_segments = visemes_from_ctc(output)
        speech.speech_model_note = None
    else:
        speech.speech_model_note = reason
        log.warning("%s The built-in phone recogniser drives the mouth instead.", reason)
    return reason


def run(path, kind: str, mono16k, device) -> SpeechModelOutput:
    """Load a checkpoint and encode 16 kHz mono audio (fp16 on CUDA, fp32 on CPU)."""
    import torch

    from .load import load_speech_model

    dev = torch.device(device)
    model = load_speech_model(path, kind=kind, device=dev)
    return model.encode(mono16k, sample_rate=16000, autocast="fp16" if dev.type == "cuda" else None)
