"""Typed contracts between the engine's stages.

Each stage (face -> speech -> motion -> render -> video) consumes and produces one
of these small dataclasses, so a stage can be tested, benchmarked or replaced alone.
Arrays are numpy on the host unless a field says torch; pixel coordinates are
(x, y) with the origin at the top-left pixel corner of the image they refer to.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .audio.phonemes import PhoneJob


@dataclass(frozen=True)
class Detection:
    """One face found by the detector, in the coordinates of the analysed image."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    score: float
    keypoints: np.ndarray  # [6, 2] pixels: right eye, left eye, nose, mouth, right ear, left ear

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


@dataclass
class Portrait:
    """The source photo and its face, as the face stage hands it to the renderer."""

    image: np.ndarray  # [H, W, 3] uint8 RGB, the whole (possibly downscaled) source photo
    detection: Detection
    landmarks: np.ndarray  # [468, 3] float32, FaceMesh points in `image` pixels (z scaled like x)
    crop_box: tuple[int, int, int, int]  # square x0, y0, x1, y1 after expand_ratio, may exceed image
    source_path: str | None = None


@dataclass
class SpeechFeatures:
    """Per-video-frame speech analysis: everything motion needs from the audio.

    `audio.features.analyze_speech` fills the per-frame fields, the level statistics and
    `audio_16k`; for the phonetic motion model `pipeline.prepare_audio` then adds either a
    speech model's output (`speech_models.apply.attach`) or a started phone recogniser
    (`phone_job`, `vad_device`), and `pipeline.make_motion` hands them to the motion model.
    An optional field is None when the stage that sets it did not run.
    """

    fps: float
    num_frames: int
    loudness: np.ndarray  # [num_frames] float32, 0..1 normalised speech loudness
    voiced: np.ndarray  # [num_frames] float32, 0..1 voicing probability
    speech: np.ndarray  # [num_frames] bool, speech (True) vs. silence
    # Levels behind `loudness` and `speech` (analyze_speech; diagnostics, no stage reads them).
    db: np.ndarray | None = None  # [num_frames] float32, dBFS of the RMS in the window at each frame centre
    threshold_db: float | None = None  # dBFS speech/silence threshold; None for silent audio
    peak_db: float | None = None  # dBFS, 95th percentile of the frames above -70 dB; None for silent audio
    # Inputs of the phonetic motion model (make_motion passes them to motion.phonetic_motion).
    audio_16k: np.ndarray | None = None  # [samples] float32 mono at 16 kHz; None: only the loudness model can run
    # An audio.phonemes.PhoneJob (phone recognition in child processes) started on audio_16k by
    # prepare_audio; make_motion collects its result. None: no recogniser running (a speech
    # model's visemes drive the mouth, or the phonetic model starts its own).
    phone_job: PhoneJob | None = None
    vad_device: str | None = None  # where the speech detector runs (prepare_audio sets a GPU); None: the CPU
    # [(start_s, end_s, viseme)] from a speech model's CTC head (attach); they replace the phone recogniser.
    viseme_segments: list[tuple[float, float, str]] | None = None
    # A speech model's output (attach), kept whether or not its visemes are usable; the features are
    # for a learned motion model (the built-in one does not read them).
    speech_model_features: np.ndarray | None = None  # [num_frames, C] float32 hidden states at the video rate
    speech_model_kind: str | None = None  # "wav2vec2", "hubert" or "comfy" (ComfyUI's audio encoder)
    speech_model_note: str | None = None  # why its visemes cannot drive the mouth (no CTC head, ...); None if they do
    # The spoken text as audio.transcript.Cue's (prepare_audio reads GenerateConfig.transcript), in
    # transcript_language; the phonetic model aligns it to the audio and uses it unless it does not fit.
    transcript: list | None = None
    transcript_language: str = "en-us"


@dataclass
class AudioClip:
    """Decoded audio: float32 samples in [-1, 1], channels first."""

    samples: np.ndarray  # [channels, samples] float32
    sample_rate: int
    source_path: str | None = None

    @property
    def duration(self) -> float:
        return self.samples.shape[1] / float(self.sample_rate)

    def mono(self) -> np.ndarray:
        """One channel: the samples themselves for mono audio (no copy), else the channel mean."""
        return self.samples[0] if self.samples.shape[0] == 1 else self.samples.mean(axis=0)


@dataclass(frozen=True)
class Channel:
    """One motion channel of a MotionTrack, declared once for everything that loops over them.

    The track, post-processing (alignment shift, smoothing), the rig's displacement fields,
    deformation and the renderer all read this table; a new channel is one line here, one
    field on MotionTrack and, if it moves vertices, one field builder in render/fields.py.
    """

    name: str  # the MotionTrack field, the rig's field and the renderer's control: one spelling
    group: str  # "mouth" (moved by lip alignment, closures kept by smoothing), "head", "brows" or "lids"
    smooth_s: float  # sigma of the zero-phase smoothing in seconds (0 = never smoothed)
    moves: str  # how the rig moves it: "field" (per-vertex displacement field times the value) or "pose" (rigid head)
    dims: int = 1  # values per frame ([N] when 1, else [N, dims]); the neutral value is 0 in every one


CHANNELS = (
    Channel("jaw_open", "mouth", 0.012, "field"),
    Channel("lip_width", "mouth", 0.012, "field"),
    Channel("pucker", "mouth", 0.012, "field"),
    Channel("lip_tuck", "mouth", 0.012, "field"),
    Channel("head_rotation", "head", 0.06, "pose", 3),
    Channel("head_translation", "head", 0.06, "pose", 2),
    Channel("brow_raise", "brows", 0.04, "field"),
    Channel("blink", "lids", 0.0, "field"),  # blinks are full closures by design
)
FIELD_CHANNELS = tuple(c.name for c in CHANNELS if c.moves == "field")
MOUTH_CHANNELS = tuple(c.name for c in CHANNELS if c.group == "mouth")


@dataclass
class MotionTrack:
    """Per-frame animation controls, in units the renderer understands.

    `jaw_open` is the lips' opening as a fraction of the face's mouth width (0 = lips
    together, also where the photo shows them parted: there 0-0.1 closes them part of the way
    and larger openings drop the jaw past the photo's own, see render/deform.py); head angles
    are radians; translation is a fraction of face size; `blink` is eyelid closure 0..1.
    """

    fps: float
    jaw_open: np.ndarray  # [N]
    lip_width: np.ndarray  # [N] relative change of mouth width (0 = as photo)
    head_rotation: np.ndarray  # [N, 3] yaw, pitch, roll in radians
    head_translation: np.ndarray  # [N, 2] x, y as a fraction of face size
    blink: np.ndarray  # [N] 0..1
    brow_raise: np.ndarray  # [N] 0..1
    pucker: np.ndarray | None = None  # [N] 0..1 lip rounding/protrusion (oo, w): narrower, rounder mouth
    lip_tuck: np.ndarray | None = None  # [N] 0..1 lower lip up under the upper teeth (f, v)
    notes: list[str] = field(default_factory=list)  # what the user should know (e.g. a transcript not used, and why)

    def __post_init__(self) -> None:
        n = self.num_frames
        for c in CHANNELS:  # a channel left out holds its neutral value
            if getattr(self, c.name) is None:
                setattr(self, c.name, np.zeros((n,) if c.dims == 1 else (n, c.dims), np.float32))

    @property
    def num_frames(self) -> int:
        return int(self.jaw_open.shape[0])
