"""Wav2Vec2 / HuBERT speech features and CTC visemes from user-supplied local weights (issue #4).

Pure PyTorch (no ``transformers`` at run time), Hugging Face parameter names, no hub access::

    from sonic_core.speech_models import load_speech_model, visemes_from_ctc

    model = load_speech_model("/models/wav2vec2-lv-60-espeak-cv-ft")     # or a ComfyUI .safetensors
    out = model.encode(mono, sample_rate=sr)          # SpeechModelOutput: hidden [T, C] at 50 Hz, logits
    feats = out.at_fps(num_frames, fps)               # [num_frames, C], exactly time-aligned
    segs = visemes_from_ctc(out)                      # [(start_s, end_s, viseme)] for motion/phonetic.py

Modules: ``encoder`` (the network), ``load`` (checkpoints), ``runtime`` (long-clip windows),
``output`` (result + video-rate alignment), ``visemes`` (CTC -> visemes).
"""
from .encoder import SpeechEncoder, SpeechEncoderConfig
from .load import (
    SUPPORTED_ARCHITECTURES,
    SpeechModel,
    infer_config_from_state_dict,
    load_speech_model,
)
from .output import SpeechModelOutput, expected_frames, features_at_fps, frame_centres
from .runtime import encode
from .visemes import (
    NO_CTC_MESSAGE,
    CTCToken,
    ctc_greedy,
    ctc_units,
    ipa_to_visemes,
    letter_to_visemes,
    normalize_ipa,
    unavailable_reason,
    viseme_posteriors,
    visemes_from_ctc,
    vocabulary_type,
)

__all__ = [
    "NO_CTC_MESSAGE", "SUPPORTED_ARCHITECTURES", "CTCToken", "SpeechEncoder", "SpeechEncoderConfig", "SpeechModel",
    "SpeechModelOutput", "ctc_greedy", "ctc_units", "encode", "expected_frames", "features_at_fps", "frame_centres",
    "infer_config_from_state_dict", "ipa_to_visemes", "letter_to_visemes",
    "load_speech_model", "normalize_ipa", "unavailable_reason", "viseme_posteriors", "visemes_from_ctc",
    "vocabulary_type",
]
