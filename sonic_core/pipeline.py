"""Orchestration: photo + speech -> MP4, streamed in chunks so memory stays flat.

Stages talk through the dataclasses in `types.py`:
    load_image -> FaceAnalyzer (Portrait) -> load_audio + analyze_speech (SpeechFeatures)
    -> make_motion (MotionTrack) -> PortraitRenderer (frame chunks) -> Mp4Writer.
Each chunk is rendered on the device and handed to the encoder thread, which
converts and encodes it while the next chunk renders.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .audio import fit_duration, load_audio
from .audio.features import analyze_speech, frame_count
from .config import MAX_DURATION_S, GenerateConfig
from .errors import SonicInputError
from .face import FaceNotFoundError
from .imageio import load_image
from .motion import loudness_motion
from .types import AudioClip, MotionTrack, Portrait, SpeechFeatures

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
OVERLAP_MOTION_MAX_S = 60.0  # clips up to this long compute motion while the face is analysed


@dataclass
class GenerateResult:
    path: str
    frames: int
    seconds: float
    width: int
    height: int
    fps: float
    device: str
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. a transcript that was not used, and why

    @property
    def elapsed(self) -> float:
        return sum(self.timings.values())

    def summary(self) -> str:
        return (f"{self.path}: {self.frames} frames, {self.seconds:.2f} s at {self.fps:g} fps, "
                f"{self.width}x{self.height}, made in {self.elapsed:.1f} s on {self.device}")


@functools.lru_cache(maxsize=1)
def _prefetch_first_job() -> threading.Thread:
    """Once per process, on a background thread: the imports and the probe a first job needs
    later (scipy.spatial for the rig, slow to import cold; whether FFmpeg can open NVENC, slow
    to find out on a host that has none). They then overlap audio decoding and the face
    stage, whose cold time is mostly waiting for the GPU, instead of adding to it."""
    def work():
        try:
            import scipy.ndimage  # noqa: F401
            import scipy.spatial  # noqa: F401

            from .video.writer import nvenc_available
            nvenc_available()
        except Exception as e:  # only a head start: the job imports (and reports) these itself
            log.debug("prefetch for the first job failed: %s", e)

    t = threading.Thread(target=work, name="sonic-prefetch", daemon=True)
    t.start()
    return t


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SonicInputError(f"Device '{device}' was asked for but CUDA is not available here; use --device cpu or auto.")
    return dev


def crop_box(detection_box: tuple[float, float, float, float], expand_ratio: float, width: int, height: int
             ) -> tuple[int, int, int, int]:
    """Square crop around a face box grown by `expand_ratio` of its size on each side, kept inside the image."""
    x0, y0, x1, y1 = detection_box
    size = max(x1 - x0, y1 - y0)
    side = int(round(size * (1.0 + 2.0 * expand_ratio)))
    side = max(2, min(side, width, height))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    left = int(round(min(max(cx - side / 2.0, 0), width - side)))
    top = int(round(min(max(cy - side / 2.0, 0), height - side)))
    return left, top, left + side, top + side


def _resize_uint8(img: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    if img.shape[1] == width and img.shape[0] == height:
        return img
    return np.asarray(Image.fromarray(img).resize((width, height), Image.LANCZOS))


def prepare_portrait(image, config: GenerateConfig, analyzer, rgb: np.ndarray | None = None
                     ) -> tuple[Portrait, np.ndarray, np.ndarray]:
    """Find the face and cut the square crop that will be animated (at min_resolution).

    `rgb`: the image already loaded with `load_image` (`image` then only names it in errors)."""
    name = image if isinstance(image, (str, os.PathLike)) else None
    rgb = load_image(image) if rgb is None else rgb
    try:
        detection, landmarks = analyzer.analyze(rgb, face_index=config.face_index)
    except FaceNotFoundError as e:
        where = f"in '{name}'" if name else "in the image"
        advice = str(e).removeprefix("No face was found in the image.").strip()
        raise FaceNotFoundError(f"No face found {where}. {advice}") from None
    box = crop_box(detection.box, config.expand_ratio, rgb.shape[1], rgb.shape[0])
    portrait = Portrait(image=rgb, detection=detection, landmarks=landmarks, crop_box=box,
                        source_path=str(name) if name else None)
    S = config.min_resolution
    x0, y0, x1, y1 = box
    crop = _resize_uint8(np.ascontiguousarray(rgb[y0:y1, x0:x1]), S, S)
    scale = S / float(x1 - x0)
    lm = landmarks.astype(np.float32).copy()
    lm[:, 0] = (lm[:, 0] - x0) * scale
    lm[:, 1] = (lm[:, 1] - y0) * scale
    lm[:, 2] *= scale
    return portrait, crop, lm


def prepare_audio(audio, config: GenerateConfig, device: str | torch.device | None = None,
                  speech_model_output=None) -> tuple[AudioClip, SpeechFeatures]:
    """Decode + per-frame speech features.

    With speech_features 'wav2vec2'/'hubert' the user's checkpoint (on `device`) gives the
    visemes; `speech_model_output` (a SpeechModelOutput, e.g. from ComfyUI's audio encoder)
    is used instead of running one. Otherwise, for the phonetic model, phone recognition
    starts here in child processes (`speech.phone_job`) and `make_motion` collects it;
    on a GPU `device` the motion model's speech detector runs there (`speech.vad_device`).
    """
    clip = fit_duration(load_audio(audio), config.duration)
    if clip.duration > MAX_DURATION_S:
        where = f"'{os.fspath(audio)}'" if isinstance(audio, (str, os.PathLike)) else "The audio"
        raise SonicInputError(f"{where} is {clip.duration / 3600:.1f} hours long; a job takes at most "
                              f"{MAX_DURATION_S / 3600:.0f} hours (its audio is held in memory). Split the recording, "
                              "or set duration to render its start.")
    n = frame_count(clip.duration, config.fps)
    speech = analyze_speech(clip.mono(), clip.sample_rate, config.fps, n)
    if config.motion_model != "phonetic":
        return clip, speech
    if speech_model_output is None and config.speech_features != "builtin":
        from .speech_models.apply import run

        speech_model_output = run(config.speech_model, config.speech_features, speech.audio_16k,
                                  resolve_device(device))
    if speech_model_output is not None:
        from .speech_models.apply import attach

        if attach(speech, speech_model_output) is None:
            return clip, speech  # the model's visemes replace the built-in recogniser
    from .audio.phonemes import PhoneJob

    if config.transcript is not None:
        from .audio.transcript import phonemize, read_transcript

        speech.transcript, speech.transcript_language = read_transcript(config.transcript), config.transcript_language
        phonemize(speech.transcript[0].text, speech.transcript_language)  # an unknown language fails here, early
    speech.phone_job = PhoneJob(speech.audio_16k)  # also the fallback when a transcript does not fit
    dev = resolve_device(device)
    if dev.type == "cuda":  # the speech detector runs there too: on the CPU it competed for cores
        speech.vad_device = str(dev)
    return clip, speech


def output_size(image_shape: tuple[int, ...], cfg: GenerateConfig) -> tuple[int, int]:
    """(width, height) of the video: the crop square, or the photo scaled to max_full_side, even."""
    if cfg.output != "full":
        return cfg.min_resolution, cfg.min_resolution
    H, W = image_shape[:2]
    f = min(1.0, cfg.max_full_side / float(max(H, W)))
    return max(2, int(W * f) // 2 * 2), max(2, int(H * f) // 2 * 2)


class FullFramePaster:
    """Pastes animated crops back into the whole photo with a feathered edge (no seam)."""

    def __init__(self, portrait: Portrait, config: GenerateConfig, device: torch.device):
        H, W = portrait.image.shape[:2]
        self.width, self.height = output_size(portrait.image.shape, config)
        fx, fy = self.width / W, self.height / H
        x0, y0, x1, y1 = portrait.crop_box
        self.x0, self.y0 = int(round(x0 * fx)), int(round(y0 * fy))
        self.w, self.h = max(1, int(round(x1 * fx)) - self.x0), max(1, int(round(y1 * fy)) - self.y0)
        base = _resize_uint8(portrait.image, self.width, self.height)
        self.base = torch.from_numpy(np.array(base, dtype=np.uint8, copy=True)).to(device)
        # Feather 4% of the crop: the warp is the identity near the crop border, so
        # blending there only hides the resampling difference.
        ramp = max(2, int(0.04 * min(self.w, self.h)))
        yy = torch.arange(self.h, device=device, dtype=torch.float32)
        xx = torch.arange(self.w, device=device, dtype=torch.float32)
        my = ((torch.minimum(yy, self.h - 1 - yy) + 0.5) / ramp).clamp(0, 1)
        mx = ((torch.minimum(xx, self.w - 1 - xx) + 0.5) / ramp).clamp(0, 1)
        self.mask = (my[:, None] * mx[None, :])[None, :, :, None]

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        B = crops.shape[0]
        x = crops.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(self.h, self.w), mode="bilinear", align_corners=False,
                          antialias=self.h < crops.shape[1]).permute(0, 2, 3, 1)
        out = self.base[None].expand(B, -1, -1, -1).clone()
        region = out[:, self.y0:self.y0 + self.h, self.x0:self.x0 + self.w].float()
        blended = region + self.mask * (x - region)
        out[:, self.y0:self.y0 + self.h, self.x0:self.x0 + self.w] = (blended + 0.5).clamp(0, 255).to(torch.uint8)
        return out


def auto_batch(size: int, device: torch.device) -> int:
    """Frames per chunk. On CUDA the renderer is launch-bound below ~64 Mpx per chunk (H100,
    1024²: 680 frames/s at 16 frames, 920-1100 at 32, 1430 at 64; 1.4 GB of VRAM at 32);
    on CPU small chunks keep memory low at no cost."""
    budget = (64 if device.type == "cuda" else 2) * 1024 * 1024  # output pixels per chunk
    return int(max(1, min(64, budget // (size * size))))


def make_motion(speech: SpeechFeatures, cfg: GenerateConfig) -> MotionTrack:
    """The motion model with the user's settings (one place, so CLI, library and nodes agree)."""
    if getattr(cfg, "motion_model", "phonetic") == "loudness" or speech.audio_16k is None:
        if speech.viseme_segments is not None:
            raise SonicInputError("The speech model's visemes drive the phonetic motion model; set motion_model to "
                                  "'phonetic', or analyse the audio without a speech model.")
        if speech.transcript is not None:
            raise SonicInputError("A transcript drives the phonetic motion model's lip shapes; set motion_model to "
                                  "'phonetic', or analyse the audio without a transcript.")
        return loudness_motion(speech, cfg.dynamic_scale, cfg.motion_scale, cfg.seed, cfg.blinks)
    from .motion import phonetic_motion

    return phonetic_motion(speech.audio_16k, 16000, speech, dynamic_scale=cfg.dynamic_scale,
                           motion_scale=cfg.motion_scale, seed=cfg.seed, blinks=cfg.blinks,
                           phone_job=speech.phone_job, segments=speech.viseme_segments,
                           vad_device=speech.vad_device, transcript=speech.transcript,
                           transcript_language=speech.transcript_language)


class Animator:
    """Everything per photo that turns motion into frames: renderer + optional paste-back.

    `chunks(track)` yields (start, stop, frames) with frames [B,H,W,3] uint8 on the device,
    so callers can stream them into an encoder, a ComfyUI IMAGE batch, or a test.
    """

    def __init__(self, portrait: Portrait, crop: np.ndarray, landmarks: np.ndarray, cfg: GenerateConfig,
                 device: torch.device, model_dir: str | os.PathLike | None = None):
        from .models import load_face_topology
        from .render.renderer import PortraitRenderer

        self.device = device
        self.cfg = cfg
        upscale = cfg.min_resolution / float(portrait.crop_box[2] - portrait.crop_box[0])
        self.renderer = PortraitRenderer(crop, landmarks, load_face_topology(model_dir), device,
                                         cfg.inference_steps, cfg.seed, upscale, cfg.mouth_painter)
        self.paster = FullFramePaster(portrait, cfg, device) if cfg.output == "full" else None
        self.width, self.height = output_size(portrait.image.shape, cfg)
        self.batch = cfg.batch_size or auto_batch(cfg.min_resolution, device)

    def render(self, track: MotionTrack, start: int, stop: int) -> torch.Tensor:
        frames = self.renderer.render(track, start, stop)
        return self.paster(frames) if self.paster is not None else frames

    def chunks(self, track: MotionTrack, start: int = 0, stop: int | None = None):
        stop = track.num_frames if stop is None else min(stop, track.num_frames)
        for s in range(start, stop, self.batch):
            e = min(stop, s + self.batch)
            yield s, e, self.render(track, s, e)


def write_mp4(animator: Animator, track: MotionTrack, clip: AudioClip, out: str | os.PathLike, crf: int,
              preset: str, progress: Progress | None = None, encoder: str | None = None) -> None:
    """Stream the clip chunk by chunk into an MP4 with its audio; rendering overlaps encoding.

    Only a chunk of frames exists at a time, so memory does not grow with clip length; the
    file is written to a temporary name and renamed when complete.
    """
    from .video.writer import Mp4Writer, choose_encoder

    n = track.num_frames
    cfg = animator.cfg
    codec, workers = choose_encoder(animator.width, animator.height, encoder or cfg.encoder, cfg.encode_workers)
    with Mp4Writer(out, animator.width, animator.height, cfg.fps, audio=clip, crf=crf, preset=preset,
                   codec=codec, workers=workers, total_frames=n, encode_ahead=True) as writer:
        for _, stop, frames in animator.chunks(track):
            writer.write(frames)
            if progress is not None:
                progress(stop, n)


def generate(image, audio, out: str | os.PathLike, config: GenerateConfig | None = None, *,
             device: str | torch.device | None = None, model_dir: str | os.PathLike | None = None,
             progress: Progress | None = None, analyzer=None, **overrides) -> GenerateResult:
    """Animate the face in `image` with the speech in `audio` and write an MP4 to `out`.

    `image`: a path or an RGB array; `audio`: a path, bytes, AudioClip or (samples, rate).
    Settings come from `config` and/or keyword overrides (see GenerateConfig); lip alignment
    and smoothing are applied as the ComfyUI Postprocess node applies them, with its defaults.
    `out` must end in .mp4, .mov or .m4v (without a suffix, .mp4 is added; the result's `path`
    says where the video went) and must not be one of the inputs. The MP4 is written to a
    temporary file and renamed when complete, so `out` is never partial.
    """
    from .face import FaceAnalyzer
    from .models import ensure_face_models
    from .motion.post import postprocess
    from .video.writer import warm_encoders

    from .video.output import check_output

    cfg = GenerateConfig(**{**(config.to_dict() if config else {}), **overrides}).validate()
    # Cheap checks first: where the video goes (never onto an input), then the image (decoding
    # it takes milliseconds; the audio and the face can take seconds).
    out = check_output(out, (image, audio))
    dev = resolve_device(device)
    rgb = load_image(image)
    _prefetch_first_job()
    timings: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - t
        t = now

    clip, speech = prepare_audio(audio, cfg, dev)
    lap("audio")
    # The motion model needs only the speech: it runs on its own thread (numpy/torch CPU work
    # that mostly releases the GIL, then the wait for the phone children) while this thread
    # finds the face and builds the renderer; "motion" is then the time still waited for it.
    # Its working memory grows with the clip, so long clips run it after setup instead, where
    # its peak does not add to the face analysis' and renderer's.
    overlap = clip.duration <= OVERLAP_MOTION_MAX_S
    motion_thread = ThreadPoolExecutor(1, thread_name_prefix="sonic-motion") if overlap else None
    try:
        motion = motion_thread.submit(make_motion, speech, cfg) if overlap else None
        ensure_face_models(model_dir)
        analyzer = analyzer or FaceAnalyzer(model_dir=model_dir, device=dev)
        portrait, crop, lm = prepare_portrait(image, cfg, analyzer, rgb)
        warm_encoders(*output_size(portrait.image.shape, cfg), cfg.encoder, cfg.encode_workers)
        lap("face")
        animator = Animator(portrait, crop, lm, cfg, dev, model_dir)
        lap("setup")
        track = motion.result() if motion is not None else make_motion(speech, cfg)
        track = postprocess(track, cfg.lip_align, cfg.alignment_offset, cfg.smooth_motion, cfg.auto_align,
                            speech.loudness)
        lap("motion")
    finally:
        if motion_thread is not None:
            motion_thread.shutdown(wait=False)  # a face error does not wait for the motion model
    n = track.num_frames
    write_mp4(animator, track, clip, out, cfg.crf, cfg.preset, progress)
    lap("render_encode")
    return GenerateResult(path=out, frames=n, seconds=n / cfg.fps, width=animator.width,
                          height=animator.height, fps=cfg.fps, device=str(dev), timings=timings,
                          notes=list(track.notes))
