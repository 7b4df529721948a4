"""Generation settings: one validated dataclass shared by the CLI, the library call and the nodes.

Every field has a real effect; `validate()` turns bad values into a `SonicInputError`
that names the setting and the accepted range, so callers never see a deep traceback.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .errors import SonicInputError

OUTPUT_MODES = ("crop", "full")
MOTION_MODELS = ("phonetic", "loudness")
MOUTH_PAINTERS = ("procedural", "classic")
SPEECH_FEATURES = ("builtin", "wav2vec2", "hubert")
ENCODERS = ("auto", "libx264", "h264_nvenc")
# x264 speed presets; "auto" = superfast with macroblock-tree rate control kept on (see video/writer.py).
PRESETS = ("auto", "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
NVENC_PRESETS = ("p1", "p2", "p3", "p4", "p5", "p6", "p7")
SEED_MAX = 2 ** 63 - 1  # seeds are 0..SEED_MAX (numpy and torch generators take them as they are)
MAX_DURATION_S = 4 * 3600.0  # the audio of a job is held whole in memory (4 h of 48 kHz stereo: ~5.5 GB)


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
    """x264 speed preset. 'auto' = superfast with macroblock-tree rate control on: ~1.7x veryfast's speed for 6-15 % larger files at the same quality. NVENC: p1-p7 (other names map to p4)."""
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
    mouth_painter: str = MOUTH_PAINTERS[0]
    """What fills the mouth when the lips part: 'procedural' (shaded cavity, teeth on a 3-D arch, tongue; the photo's own teeth when it shows them) or 'classic' (the first painter)."""

    def validate(self) -> "GenerateConfig":
        def bad(name: str, why: str) -> SonicInputError:
            return SonicInputError(f"Setting '{name}' {why}.")

        if self.duration is not None and not (0 < self.duration <= MAX_DURATION_S):
            raise bad("duration", f"must be a positive number of seconds up to {MAX_DURATION_S:.0f} ({MAX_DURATION_S / 3600:.0f} "
                      f"hours: the job holds its whole audio in memory; split longer recordings), or left unset for the "
                      f"whole audio (got {self.duration})")
        try:
            seed_ok = float(self.seed) == int(self.seed) and 0 <= int(self.seed) <= SEED_MAX
        except (TypeError, ValueError, OverflowError):
            seed_ok = False
        if not seed_ok:
            raise bad("seed", f"must be a whole number from 0 to {SEED_MAX} (got {self.seed!r})")
        if not (64 <= int(self.min_resolution) <= 4096):
            raise bad("min_resolution", f"must be between 64 and 4096 pixels (got {self.min_resolution}); 512 or 1024 are typical")
        if not (0.0 <= self.expand_ratio <= 3.0):
            raise bad("expand_ratio", f"must be between 0 and 3 (got {self.expand_ratio}); 0.15-0.5 is typical")
        if not (1 <= int(self.inference_steps) <= 100):
            raise bad("inference_steps", f"must be between 1 and 100 (got {self.inference_steps})")
        if not (0.0 <= self.dynamic_scale <= 3.0):
            raise bad("dynamic_scale", f"must be between 0 and 3 (got {self.dynamic_scale})")
        if not (0.0 <= self.motion_scale <= 3.0):
            raise bad("motion_scale", f"must be between 0 and 3 (got {self.motion_scale})")
        if not (1.0 <= self.fps <= 120.0):
            raise bad("fps", f"must be between 1 and 120 (got {self.fps})")
        if self.output not in OUTPUT_MODES:
            raise bad("output", f"must be one of {', '.join(OUTPUT_MODES)} (got {self.output!r})")
        if not (64 <= int(self.max_full_side) <= 8192):
            raise bad("max_full_side", f"must be between 64 and 8192 (got {self.max_full_side})")
        if int(self.face_index) < 0:
            raise bad("face_index", f"must be 0 (largest face) or more (got {self.face_index})")
        if not (0 <= int(self.crf) <= 51):
            raise bad("crf", f"must be between 0 and 51 (got {self.crf})")
        if int(self.batch_size) < 0:
            raise bad("batch_size", f"must be 0 (automatic) or a positive number of frames (got {self.batch_size})")
        if self.encoder not in ENCODERS:
            raise bad("encoder", f"must be 'auto', 'libx264' or 'h264_nvenc' (got {self.encoder!r})")
        if self.preset not in PRESETS + NVENC_PRESETS:
            raise bad("preset", f"must be one of {', '.join(PRESETS)} (x264) or p1-p7 (NVENC) (got {self.preset!r})")
        if not (0 <= int(self.encode_workers) <= 64):
            raise bad("encode_workers", f"must be 0 (automatic) or 1-64 (got {self.encode_workers})")
        try:
            offset_ok = abs(float(self.alignment_offset)) <= 1.0
        except (TypeError, ValueError):
            offset_ok = False
        if not offset_ok:
            raise bad("alignment_offset", f"must be between -1 and 1 seconds (got {self.alignment_offset!r}); 0.03 is a typical correction")
        if self.motion_model not in MOTION_MODELS:
            raise bad("motion_model", f"must be 'phonetic' or 'loudness' (got {self.motion_model!r})")
        if self.mouth_painter not in MOUTH_PAINTERS:
            raise bad("mouth_painter", f"must be one of {', '.join(MOUTH_PAINTERS)} (got {self.mouth_painter!r})")
        if self.speech_features not in SPEECH_FEATURES:
            raise bad("speech_features", f"must be 'builtin', 'wav2vec2' or 'hubert' (got {self.speech_features!r})")
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
        self.min_resolution = int(self.min_resolution) // 2 * 2
        self.max_full_side = int(self.max_full_side) // 2 * 2
        self.inference_steps = int(self.inference_steps)
        self.seed = int(self.seed)
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
