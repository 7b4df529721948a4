"""ComfyUI data conventions <-> engine types, and the node-facing stage functions.

Glue of the node pack (the engine never imports it). Imports nothing from ComfyUI itself: the
nodes call these, tests call them directly.

ComfyUI conventions:
  IMAGE = torch float32 [B, H, W, 3] in 0..1 (CPU)
  AUDIO = {"waveform": torch float32 [B, C, T], "sample_rate": int}

The objects passed between Sonic nodes are the small bundles below (PreparedFace, SpeechInput,
MotionInput); each keeps the settings it was made with, so downstream nodes can check that
the graph is consistent instead of silently mixing settings.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from sonic_core.config import GenerateConfig
from sonic_core.errors import SonicInputError
from sonic_core.speech_models.output import HOP, MODEL_RATE, SpeechModelOutput, expected_frames
from sonic_core.types import AudioClip, MotionTrack, Portrait, SpeechFeatures

ChunkHook = Callable[[int, int], None]  # (frames done, total frames), called after every chunk


@dataclass
class PreparedFace:
    """The face loader's output: the detected face, its animated crop and the settings used."""

    portrait: Portrait
    crop: np.ndarray  # [S, S, 3] uint8, S = config.min_resolution
    landmarks: np.ndarray  # [468, 3] landmarks in crop pixels
    config: GenerateConfig


@dataclass
class SpeechInput:
    """The audio predata node's output: the audio fitted to the video length and its features."""

    clip: AudioClip
    speech: SpeechFeatures

    @property
    def frames(self) -> int:
        return self.speech.num_frames

    @property
    def seconds(self) -> float:
        return self.speech.num_frames / float(self.speech.fps)


@dataclass
class MotionInput:
    """The sampler's output: a motion track, the audio it was made from and the settings."""

    track: MotionTrack
    clip: AudioClip
    config: GenerateConfig


# --------------------------------------------------------------------------- conversions
def image_to_rgb(image, index: int = 0) -> np.ndarray:
    """ComfyUI IMAGE ([B,H,W,C] or [H,W,C] float 0..1) -> [H, W, 3] uint8 RGB (image `index` of the batch)."""
    if not isinstance(image, torch.Tensor):
        image = torch.as_tensor(np.asarray(image))
    t = image.detach()
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[0] == 0 or t.shape[-1] not in (1, 3, 4):
        raise SonicInputError(f"Expected an IMAGE of shape [batch, height, width, 3] (got {tuple(image.shape)}). "
                              "Connect a Load Image node.")
    if not 0 <= index < t.shape[0]:
        raise SonicInputError(f"Image index {index} is outside the batch of {t.shape[0]} images.")
    t = t[index].float().cpu()
    if t.shape[-1] == 1:
        t = t.expand(-1, -1, 3)
    elif t.shape[-1] == 4:  # RGBA: composite onto white like the engine's loader
        a = t[..., 3:4].clamp(0, 1)
        t = t[..., :3] * a + (1 - a)
    t = torch.nan_to_num(t, nan=0.0).clamp(0, 1)
    return (t * 255.0 + 0.5).to(torch.uint8).numpy()


def rgb_to_image(rgb: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 -> IMAGE [1, H, W, 3] float32 0..1."""
    return torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).float().div_(255.0)[None]


def audio_to_clip(audio) -> AudioClip:
    """ComfyUI AUDIO dict -> AudioClip (first item of the batch), with user-facing errors."""
    from sonic_core.audio.decode import audio_from_array

    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise SonicInputError("Expected an AUDIO input ({'waveform': [1, channels, samples], 'sample_rate': rate}); "
                              "connect a Load Audio node.")
    wav = audio["waveform"]
    if hasattr(wav, "detach"):
        wav = wav.detach().float().cpu().numpy()
    wav = np.asarray(wav)
    if wav.ndim == 3:
        if wav.shape[0] == 0:
            raise SonicInputError("The AUDIO input is empty (batch of 0); load an audio file with speech in it.")
        wav = wav[0]
    try:
        rate = int(audio["sample_rate"])
    except (TypeError, ValueError):
        raise SonicInputError(f"The AUDIO input has an invalid sample rate {audio['sample_rate']!r}.") from None
    if wav.size == 0:
        raise SonicInputError("The audio is empty (0 samples): it could not be decoded or holds no sound. "
                              "Use a WAV, MP3, FLAC, OGG or M4A file with speech in it.")
    return audio_from_array(wav, rate, source_path=None)


def clip_to_audio(clip: AudioClip, num_frames: int | None = None, fps: float | None = None) -> dict:
    """AudioClip -> ComfyUI AUDIO, trimmed or padded with silence to num_frames / fps seconds when given."""
    samples = clip.samples
    if num_frames is not None and fps:
        n = int(round(num_frames / float(fps) * clip.sample_rate))
        if n <= samples.shape[1]:
            samples = samples[:, :n]
        else:
            samples = np.pad(samples, ((0, 0), (0, n - samples.shape[1])))
    wav = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None]
    return {"waveform": wav, "sample_rate": int(clip.sample_rate)}


# --------------------------------------------------------------------------- stages
def make_config(**settings) -> GenerateConfig:
    """GenerateConfig from widget values; unknown names and bad values are user errors."""
    names = {f.name for f in dataclasses.fields(GenerateConfig)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise SonicInputError(f"Unknown Sonic setting(s): {', '.join(unknown)}.")
    for k, v in settings.items():
        if v is None and k not in ("duration", "speech_model", "transcript"):
            raise SonicInputError(f"Setting '{k}' is not set; give it a value.")
    return GenerateConfig(**settings).validate()


def prepare_face(image, config: GenerateConfig, analyzer) -> PreparedFace:
    """IMAGE -> PreparedFace (detect, expand_ratio, crop at min_resolution)."""
    from sonic_core.pipeline import prepare_portrait

    config = dataclasses.replace(config).validate()
    portrait, crop, lm = prepare_portrait(image_to_rgb(image), config, analyzer)
    return PreparedFace(portrait=portrait, crop=crop, landmarks=lm, config=config)


def face_preview(rig: PreparedFace, max_side: int = 1024) -> np.ndarray:
    """The photo with the crop box (green) and the 468 landmarks (red dots) drawn; [H, W, 3] uint8."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(rig.portrait.image)
    f = min(1.0, max_side / float(max(img.size)))
    if f < 1.0:
        img = img.resize((max(1, int(img.width * f)), max(1, int(img.height * f))), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = (v * f for v in rig.portrait.crop_box)
    width = max(2, int(round(0.006 * max(img.size))))
    draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(0, 255, 0), width=width)
    bx0, by0, bx1, by1 = (v * f for v in rig.portrait.detection.box)
    draw.rectangle([bx0, by0, bx1, by1], outline=(255, 255, 0), width=max(1, width // 2))
    r = max(1.0, 0.0025 * max(img.size))
    for x, y in rig.portrait.landmarks[:, :2] * f:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 0, 0))
    return np.asarray(img)


def prepare_speech(audio, fps: float, duration: float | None = None, speech_features: str = "builtin",
                   speech_model: str | None = None, encoder_output: dict | None = None, device=None,
                   transcript: str | None = None, transcript_language: str = "en-us") -> SpeechInput:
    """AUDIO (or anything sonic_core.audio.load_audio takes) -> SpeechInput; duration None/0 = whole audio.

    speech_features/speech_model: a Wav2Vec2/HuBERT CTC checkpoint for the visemes (see
    GenerateConfig); encoder_output: ComfyUI's AUDIO_ENCODER_OUTPUT for this audio (hidden
    states only: attached as per-frame features, the built-in recogniser keeps the mouth);
    transcript: the spoken text or a .txt/.srt/.vtt path, aligned to the audio by the motion model.
    """
    from sonic_core.pipeline import prepare_audio

    if isinstance(audio, (AudioClip, str, os.PathLike, bytes)):
        clip = audio
    else:
        clip = audio_to_clip(audio)
    cfg = make_config(fps=float(fps), duration=(float(duration) if duration else None),
                      speech_features=speech_features, speech_model=speech_model, transcript=transcript,
                      transcript_language=transcript_language)
    model_output = None
    if encoder_output is not None:
        model_output = from_comfy_encoder_output(encoder_output)
        if speech_features != "builtin":
            raise SonicInputError("Give either a speech_model or an audio_encoder_output to Sonic Audio PreData, "
                                  "not both.")
    clip, speech = prepare_audio(clip, cfg, device, speech_model_output=model_output)
    return SpeechInput(clip=clip, speech=speech)


def sample_motion(face: PreparedFace, speech: SpeechInput, config: GenerateConfig) -> MotionInput:
    from sonic_core.pipeline import make_motion

    cfg = dataclasses.replace(config, fps=float(speech.speech.fps), duration=speech.clip.duration).validate()
    _check_same_face_settings(face.config, cfg)
    return MotionInput(track=make_motion(speech.speech, cfg), clip=speech.clip, config=cfg)


def postprocess_motion(motion: MotionInput, lip_align: bool, alignment_offset: float, smooth_motion: bool,
                       auto_align: bool = False) -> MotionInput:
    from sonic_core.motion.post import postprocess

    loudness = None
    if lip_align and auto_align:
        from sonic_core.audio.features import analyze_speech

        track = motion.track
        loudness = analyze_speech(motion.clip.mono(), motion.clip.sample_rate, track.fps, track.num_frames).loudness
    return dataclasses.replace(motion, track=postprocess(motion.track, bool(lip_align), alignment_offset,
                                                         bool(smooth_motion), bool(auto_align), loudness))


def _check_same_face_settings(face_cfg: GenerateConfig, cfg: GenerateConfig) -> None:
    for name in ("min_resolution", "expand_ratio"):
        if getattr(face_cfg, name) != getattr(cfg, name):
            raise SonicInputError(
                f"The face was prepared with {name}={getattr(face_cfg, name)} but the sampler's config has "
                f"{name}={getattr(cfg, name)}; connect the same Sonic Config node to the face loader and the sampler.")


def make_animator(face: PreparedFace, motion: MotionInput, device, model_dir):
    from sonic_core.pipeline import Animator

    _check_same_face_settings(face.config, motion.config)
    return Animator(face.portrait, face.crop, face.landmarks, motion.config, device, model_dir)


def iter_frames(animator, track: MotionTrack, on_chunk: ChunkHook | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (start, stop, uint8 frames on device) chunk by chunk, calling on_chunk(stop, total) after each."""
    total = track.num_frames
    for start, stop, frames in animator.chunks(track):
        yield start, stop, frames
        if on_chunk is not None:
            on_chunk(stop, total)


def render_image_batch(face: PreparedFace, motion: MotionInput, device, model_dir,
                       on_chunk: ChunkHook | None = None) -> tuple[torch.Tensor, dict, float]:
    """Render the whole clip as an IMAGE batch (float32 [N,H,W,3] 0..1, CPU), AUDIO fitted to N frames, fps."""
    animator = make_animator(face, motion, device, model_dir)
    n = motion.track.num_frames
    out = torch.empty((n, animator.height, animator.width, 3), dtype=torch.float32)
    for start, stop, frames in iter_frames(animator, motion.track, on_chunk):
        out[start:stop].copy_(frames.to("cpu", non_blocking=False)).div_(255.0)
    fps = float(motion.config.fps)
    return out, clip_to_audio(motion.clip, n, fps), fps


def image_batch_bytes(face: PreparedFace, motion: MotionInput) -> int:
    """Bytes the IMAGE batch of this clip takes (to warn before a huge render)."""
    from sonic_core.pipeline import output_size

    w, h = output_size(face.portrait.image.shape, motion.config)
    return motion.track.num_frames * w * h * 3 * 4


def render_to_mp4(face: PreparedFace, motion: MotionInput, path: str | os.PathLike, device, model_dir,
                  crf: int | None = None, preset: str | None = None, on_chunk: ChunkHook | None = None,
                  encoder: str | None = None) -> dict:
    """Stream the clip chunk by chunk into an MP4 with its audio (atomic: temp file + rename).

    Only one chunk of frames exists at a time, so memory does not grow with clip length.
    Returns {"path", "frames", "seconds", "width", "height", "fps"}.
    """
    from sonic_core.pipeline import write_mp4

    cfg = motion.config
    crf = cfg.crf if crf is None else int(crf)
    preset = cfg.preset if preset is None else str(preset)
    dataclasses.replace(cfg, crf=crf, preset=preset).validate()  # the same checks and messages as everywhere
    animator = make_animator(face, motion, device, model_dir)
    n = motion.track.num_frames
    write_mp4(animator, motion.track, motion.clip, path, crf, preset, on_chunk, encoder)
    return {"path": os.fspath(path), "frames": n, "seconds": n / float(cfg.fps), "width": animator.width,
            "height": animator.height, "fps": float(cfg.fps)}


__all__ = ["PreparedFace", "SpeechInput", "MotionInput", "image_to_rgb", "rgb_to_image", "audio_to_clip", "clip_to_audio",
           "make_config", "prepare_face", "face_preview", "prepare_speech", "sample_motion", "postprocess_motion",
           "render_image_batch", "render_to_mp4", "image_batch_bytes"]


def from_comfy_encoder_output(output: dict, batch_index: int = 0) -> SpeechModelOutput:
    """ComfyUI core's AudioEncoderEncode output -> SpeechModelOutput (hidden states only, no logits).

    ComfyUI's dict holds ``encoded_audio`` [B, T, C], ``encoded_audio_all_layers`` (a tuple of
    [B, T, C]) and ``audio_samples`` (samples fed to the encoder, at 16 kHz). The frame count is
    checked against the wav2vec2 conv stack so a Whisper encoder's output (different timing) is
    refused rather than mistimed.
    """
    if not isinstance(output, dict) or "encoded_audio" not in output:
        raise SonicInputError(
            "Expected ComfyUI's AUDIO_ENCODER_OUTPUT (a dict with 'encoded_audio'); connect the output of the "
            "'Audio Encoder Encode' node."
        )
    enc = output["encoded_audio"]
    enc = enc.detach().float().cpu().numpy() if hasattr(enc, "detach") else np.asarray(enc, np.float32)
    if enc.ndim == 2:
        enc = enc[None]
    if enc.ndim != 3:
        raise SonicInputError(f"encoded_audio has shape {enc.shape}; expected [batch, frames, channels].")
    if not 0 <= batch_index < enc.shape[0]:
        raise SonicInputError(f"batch_index {batch_index} out of range for a batch of {enc.shape[0]}.")
    samples = output.get("audio_samples")
    t = enc.shape[1]
    if samples is None:
        samples = (t - 1) * HOP + 400
    samples = int(samples)
    if t != expected_frames(samples):
        raise SonicInputError(
            f"The audio encoder output has {t} frames for {samples} samples, but a wav2vec2/HuBERT encoder gives "
            f"{expected_frames(samples)} (20 ms frames). It is probably a Whisper encoder; use a wav2vec2 or "
            "HuBERT model in the Audio Encoder Loader."
        )
    layers = output.get("encoded_audio_all_layers")
    states = None
    if layers:
        states = np.stack([(x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x))[batch_index]
                           for x in layers]).astype(np.float32)
    return SpeechModelOutput(hidden=np.ascontiguousarray(enc[batch_index], np.float32), logits=None, vocab=None,
                             frame_rate=MODEL_RATE / HOP, kind="comfy", hidden_states=states, num_samples=samples)
