"""Generation settings: one validated dataclass shared by the CLI, the library call and the nodes.

Every field has a real effect; `validate()` turns bad values into a `SonicInputError`
that names the setting and the accepted range, so callers never see a deep traceback.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, fields

from .errors import SonicInputError

OUTPUT_MODES = ("crop", "full")
MOTION_MODELS = ("phonetic", "loudness")
MOUTH_PAINTERS = ("procedural", "classic")
MOUTH_SOURCES = ("auto", "video", "painter")
SPEECH_FEATURES = ("builtin", "wav2vec2", "hubert")
ENCODERS = ("auto", "libx264", "h264_nvenc")
# x264 speed presets; "auto" = superfast with macroblock-tree rate control kept on (see video/writer.py).
PRESETS = ("auto", "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
NVENC_PRESETS = ("p1", "p2", "p3", "p4", "p5", "p6", "p7")
SEED_MAX = 2 ** 63 - 1  # seeds are 0..SEED_MAX (numpy and torch generators take them as they are)
MAX_DURATION_S = 4 * 3600.0  # the audio of a job is held whole in memory (4 h of 48 kHz stereo: ~5.5 GB)


@dataclass(frozen=True)
class Range:
    """The accepted values of a numeric setting, declared once: `validate()`, the CLI's help
    and the ComfyUI widgets all read it."""

    lo: float
    hi: float | None = None  # None: no upper bound
    note: str = ""  # what the error adds: typical values, what 0 means
    step: float | None = None  # widget step (None: ComfyUI's default)

    def describe(self) -> str:
        fmt = lambda v: f"{v:g}" if isinstance(v, float) else str(v)  # noqa: E731
        return f"{fmt(self.lo)} or more" if self.hi is None else f"between {fmt(self.lo)} and {fmt(self.hi)}"

    def widget(self) -> dict:
        spec = {"min": self.lo}
        if self.hi is not None:
            spec["max"] = self.hi
        if self.step is not None:
            spec["step"] = self.step
        return spec


RANGES: dict[str, Range] = {
    "duration": Range(0.0, MAX_DURATION_S, f"{MAX_DURATION_S / 3600:.0f} hours at most: the job holds its whole audio in "
                      "memory, split longer recordings; unset = the whole audio", 0.1),
    "min_resolution": Range(64, 4096, "512 or 1024 are typical", 2),
    "expand_ratio": Range(0.0, 3.0, "0.15-0.5 is typical", 0.01),
    "inference_steps": Range(1, 100),
    "dynamic_scale": Range(0.0, 3.0, "", 0.01),
    "motion_scale": Range(0.0, 3.0, "", 0.01),
    "fps": Range(1.0, 120.0, "", 0.01),
    "seed": Range(0, SEED_MAX),
    "max_full_side": Range(64, 8192, "", 2),
    "face_index": Range(0, None, "0 = the largest face"),
    "crf": Range(0, 51),
    "encode_workers": Range(0, 64, "0 = automatic"),
    "batch_size": Range(0, None, "0 = automatic, else frames per chunk"),
    "alignment_offset": Range(-1.0, 1.0, "seconds; 0.03 is a typical correction", 0.01),
}
INT_SETTINGS = ("min_resolution", "inference_steps", "seed", "max_full_side", "face_index", "crf", "encode_workers",
                "batch_size")
# Named choices of the string settings, declared once (validation, CLI choices, node combos).
CHOICES: dict[str, tuple[str, ...]] = {
    "output": OUTPUT_MODES,
    "motion_model": MOTION_MODELS,
    "mouth_painter": MOUTH_PAINTERS,
    "mouth_source": MOUTH_SOURCES,
    "speech_features": SPEECH_FEATURES,
    "encoder": ENCODERS,
    "preset": PRESETS + NVENC_PRESETS,
}


@dataclass
class GenerateConfig:
    duration: float | None = None
    """Seconds of video. None = the whole audio; shorter trims the audio, longer pads it with silence."""
    min_resolution: int = 512
    """Side of the square face region that is animated, in pixels (rounded down to even). 1024 for HD."""
    expand_ratio: float = 0.5
    """Grow the detected face box by this fraction of its size on each side before cropping (0.15-0.2 = tight face, 0.5 = head and shoulders)."""
    inference_steps: int = 25
    """Upper bound on the iterations of the inverse mesh-warp solver; it stops early once every pixel is placed. 1-4 leave small misplacements under motion; returns vanish past about 12."""
    dynamic_scale: float = 1.0
    """Scales mouth motion (jaw opening); 1.1-1.2 for fast speech, 0 = mouth never moves."""
    motion_scale: float = 1.0
    """Scales head motion, blinks aside (0 = still head)."""
    fps: float = 25.0
    """Frames per second of the output video."""
    seed: int = 0
    """Seed for idle head motion and blink timing: same inputs + seed = identical frames (on CPU)."""
    output: str = "crop"
    """'crop': the animated square face region (min_resolution²). 'full': the whole photo with the face pasted back."""
    max_full_side: int = 1920
    """In 'full' output, the long side of the frame is downscaled to at most this many pixels."""
    face_index: int = 0
    """Which face to animate when the photo has several: 0 = largest, 1 = next largest, ..."""
    blinks: bool = True
    """Natural blinks (about 15 per minute)."""
    crf: int = 18
    """H.264 quality (lower = better, larger files)."""
    preset: str = "auto"
    """x264 speed preset. 'auto' = superfast with macroblock-tree rate control on: faster than veryfast for slightly larger files at the same quality (measured in the CHANGELOG). NVENC: p1-p7 (other names map to p4)."""
    encoder: str = "auto"
    """'auto': NVENC on cards that have it, else libx264 in parallel segments; or force 'libx264' / 'h264_nvenc'."""
    encode_workers: int = 0
    """Parallel x264 instances, each encoding its own segment of the video; 0 = automatic (1 on small CPUs, up to 8 on big ones)."""
    batch_size: int = 0
    """Frames rendered per chunk; 0 = automatic (by resolution and device)."""
    speech_features: str = "builtin"
    """'builtin': pocketsphinx phones + acoustics, no download (default). 'wav2vec2' / 'hubert': visemes from your own CTC checkpoint (speech_model), e.g. a phoneme fine-tune for non-English speech."""
    speech_model: str | None = None
    """Wav2Vec2/HuBERT checkpoint for speech_features 'wav2vec2'/'hubert': a Hugging Face folder (config.json + model.safetensors, vocab.json) or one .safetensors file (ComfyUI models/audio_encoders)."""
    motion_model: str = "phonetic"
    """'phonetic': lip shapes from recognised phones + acoustics, prosody-driven head (default). 'loudness': the first model, mouth opening from loudness only."""
    lip_align: bool = True
    """Shift the mouth against the sound by alignment_offset (and auto_align); off = both ignored."""
    alignment_offset: float = 0.0
    """Seconds the mouth is moved against the sound, + = later (-1 to 1; 0.03 is a typical correction)."""
    auto_align: bool = False
    """With lip_align: first measure the mouth's own lead or lag against the speech loudness and cancel it; alignment_offset then applies on top."""
    smooth_motion: bool = True
    """Zero-phase smoothing of head, brows and (lightly, keeping closures shut) the mouth."""
    transcript: str | None = None
    """Optional: what is said, as text or the path of a .txt, .srt or .vtt file (subtitle times bound each line). Its phones, aligned to the audio, drive the lips; a transcript that does not match the audio is reported and not used."""
    transcript_language: str = "en-us"
    """Language of the transcript, as an espeak-ng voice name: en-us, en-gb, es, de, fr-fr, cmn, ... (espeak-ng --voices lists them)."""
    mouth_painter: str = MOUTH_PAINTERS[0]
    """What fills the mouth when the lips part: 'procedural' (shaded cavity, teeth on a 3-D arch, tongue; the photo's own teeth when it shows them) or 'classic' (the first painter)."""
    mouth_source: str = MOUTH_SOURCES[0]
    """Where the mouth comes from. 'video': the person's own mouths, taken from their video (dubbing, or reference_video with a photo). 'painter': the photo's mouth moved by the mesh and filled by mouth_painter. 'auto': 'video' when there is a video, else 'painter'."""

    def validate(self) -> "GenerateConfig":
        def bad(name: str, why: str) -> SonicInputError:
            return SonicInputError(f"Setting '{name}' {why}.")

        if self.duration is not None:
            try:
                ok = 0 < float(self.duration) <= MAX_DURATION_S
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise bad("duration", f"must be a positive number of seconds up to {MAX_DURATION_S:.0f} "
                          f"(got {self.duration!r}); {RANGES['duration'].note}")
        for name, rng in RANGES.items():
            if name == "duration":
                continue
            value = getattr(self, name)
            try:
                if name in INT_SETTINGS:  # whole numbers, compared exactly (2**63-1 is no float)
                    whole = isinstance(value, int) or float(value).is_integer()
                    num = int(value) if isinstance(value, int) else int(float(value)) if whole else None
                else:
                    num = float(value)
                ok = num is not None and rng.lo <= num and (rng.hi is None or num <= rng.hi)
            except (TypeError, ValueError, OverflowError):
                ok = False
            if not ok:
                kind = "a whole number" if name in INT_SETTINGS else "a number"
                raise bad(name, f"must be {kind} {rng.describe()} (got {value!r})" + (f"; {rng.note}" if rng.note else ""))
        for name, options in CHOICES.items():
            if getattr(self, name) not in options:
                raise bad(name, f"must be one of {', '.join(options)} (got {getattr(self, name)!r})")
        if self.speech_model in ("", "none"):
            self.speech_model = None
        if self.speech_features != "builtin":
            if self.speech_model is None:
                raise bad("speech_model", f"is needed with speech_features '{self.speech_features}': give the path of "
                          "a Hugging Face model folder or a .safetensors file")
            if self.motion_model != "phonetic":
                raise bad("speech_features", f"'{self.speech_features}' drives the phonetic motion model's visemes; "
                          "use motion_model 'phonetic' (or speech_features 'builtin' with 'loudness')")
        elif self.speech_model is not None:
            raise bad("speech_model", "is only read with speech_features 'wav2vec2' or 'hubert'; set speech_features "
                      "to the model's kind, or leave speech_model empty")
        if isinstance(self.transcript, os.PathLike):
            self.transcript = os.fspath(self.transcript)
        if self.transcript is not None and not isinstance(self.transcript, str):
            raise bad("transcript", f"must be text or the path of a .txt/.srt/.vtt file (got {type(self.transcript).__name__})")
        if self.transcript is not None and not self.transcript.strip():
            self.transcript = None
        if self.transcript is None and not self.transcript_language:
            self.transcript_language = "en-us"
        if self.transcript is not None:
            if self.motion_model != "phonetic":
                raise bad("transcript", "drives the phonetic motion model's lip shapes; use motion_model 'phonetic'")
            if self.speech_features != "builtin":
                raise bad("transcript", f"and speech_features '{self.speech_features}' both say which phones are "
                          "spoken; give one of them")
        lang = str(self.transcript_language or "").strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9+_-]{0,39}", lang):
            raise bad("transcript_language", f"must be an espeak-ng voice name such as en-us, es or de "
                      f"(got {self.transcript_language!r})")
        self.transcript_language = lang
        for name in INT_SETTINGS:
            setattr(self, name, int(getattr(self, name)))
        self.min_resolution = self.min_resolution // 2 * 2
        self.max_full_side = self.max_full_side // 2 * 2
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        """Field name -> one-line help, read from the docstrings under each field (for CLI help and tooltips)."""
        import ast
        import inspect
        import textwrap

        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        docs: dict[str, str] = {}
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                docs[node.target.id] = str(nxt.value.value)
        return {f.name: docs.get(f.name, "") for f in fields(cls)}
