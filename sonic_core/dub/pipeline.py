"""Dubbing: a video of a person + new speech -> the same video, its mouth speaking the new words.

    VideoFile/FrameArray -> track_faces (FaceTrack) -> ShapeModel + ExemplarBank (Dubber)
    new audio -> prepare_audio + make_motion (MotionTrack, mouth channels only)
    -> per output frame: the video frame (ping-pong when the audio is longer), its mouth
       replaced by the nearest exemplars warped onto the target lips -> Mp4Writer.

Head motion, blinks, the upper face and the whole background are the video's own; only the
region from below the nose to under the chin is replaced. Frames without a tracked face are
kept as they are (and counted in the result's notes).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields

import numpy as np
import torch

from ..config import GenerateConfig
from ..errors import SonicInputError
from ..face.track import FaceTrack, track_faces
from ..types import MotionTrack
from ..video.reader import FrameArray, VideoFile, constant_rate, pingpong
from . import shape as sh
from .bank import ExemplarBank, build_bank
from .composite import MouthCompositor
from .painted import PaintedMouth, reference_frame

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
# Settings of photo animation that have no meaning for a video: set, they are an error.
PHOTO_ONLY = ("min_resolution", "expand_ratio", "output", "max_full_side", "blinks", "motion_scale", "seed")
OPEN_GAIN = (0.6, 1.6)  # the track's openings are scaled to the video's own, within these bounds


def check_dub_config(cfg: GenerateConfig) -> None:
    """A photo-only setting changed from its default is a mistake the user should hear about."""
    default = GenerateConfig()
    for f in fields(GenerateConfig):
        if f.name in PHOTO_ONLY and getattr(cfg, f.name) != getattr(default, f.name):
            raise SonicInputError(f"{f.name} does not apply to dubbing a video (the head, eyes and framing come from "
                                  "the video, which keeps its own size); leave it at its default.")
    if dub_source(cfg) == "video":
        for name in ("mouth_painter", "inference_steps"):
            if getattr(cfg, name) != getattr(default, name):
                raise SonicInputError(f"{name} shapes the painted mouth; a dubbed video takes the person's own mouths "
                                      "(mouth_source 'video'). Set mouth_source to 'painter' to use it.")


def dub_source(cfg: GenerateConfig) -> str:
    """The mouth source of a dubbing job: 'auto' means the video's own mouths."""
    return "video" if cfg.mouth_source == "auto" else cfg.mouth_source


def open_video(video, fps: float | None = None):
    """A VideoFile for a path, a FrameArray for frames in memory (their `fps` is then needed)."""
    if isinstance(video, (str, os.PathLike)):
        return VideoFile(video)
    if fps is None:
        raise SonicInputError("Video frames given as an array need their frame rate (video_fps).")
    return FrameArray(video, fps)


class Dubber:
    """Everything per video: the tracked face, the person's mouth model and exemplar bank.

    `source`: 'video' (an exemplar bank of the person's own mouths) or 'painter' (the most
    neutral frame's mouth, animated by the photo renderer with `painter`).
    `bank_frames`: only frames below this index feed the mouth source (a benchmark holds the
    rest out). `face`: a FaceTrack of this video from an earlier Dubber (skips tracking).
    """

    def __init__(self, video, analyzer, device: torch.device, face_index: int = 0,
                 bank_frames: int | None = None, progress: Progress | None = None, source: str = "video",
                 painter: str = "procedural", steps: int = 25, model_dir=None, face: FaceTrack | None = None):
        self.video = video
        self.device = device
        if face is None:
            total = max(1, video.estimated_frames)
            report = (lambda n: progress(min(n, total), total)) if progress is not None else None
            frames = (rgb for _, rgb in video.scan())
            face = track_faces(frames, analyzer, face_index, progress=report, name=f"'{video.path}'")
            if progress is not None and face.num_frames < total:  # the estimate was high: end the bar
                progress(total, total)
        self.face = face
        n = self.face.num_frames
        usable = self.face.found.copy()
        if bank_frames is not None:
            usable[bank_frames:] = False
        if not usable.any():
            raise SonicInputError(f"No frame of '{video.path}' that may feed the mouth bank shows a face.")
        lm = self.face.landmarks
        self.model = sh.ShapeModel.fit(lm[usable])
        self.scale = np.linalg.norm(lm[:, 263, :2] - lm[:, 33, :2], axis=-1).astype(np.float32)
        self.bank: ExemplarBank | None = None
        self.painted: PaintedMouth | None = None
        if source == "video":
            self.bank = build_bank(video.frames, lm, usable, self.model, device)
        elif source == "painter":
            ref = reference_frame(self.model.describe(lm), usable)
            self.painted = PaintedMouth(video.frames([ref])[0], lm[ref], device, painter, steps, model_dir)
        else:
            raise SonicInputError(f"mouth source must be 'video' or 'painter' for a video, got {source!r}")
        self.compositor = MouthCompositor(device)
        self.num_frames = n

    @property
    def missing(self) -> int:
        return int((~self.face.found).sum())

    def timeline(self, n_out: int, fps: float) -> np.ndarray:
        """Video frame shown at each of n_out output frames at `fps`: the video at its own pace,
        forward and back when the audio outlasts it."""
        cfr = constant_rate(self.video.times, fps)
        return cfr[pingpong(n_out, len(cfr))]

    def open_gain(self, track: MotionTrack) -> float:
        """Scale from the motion track's lip openings to this person's (their 95th percentiles)."""
        moving = track.jaw_open[track.jaw_open > 0.02]
        if len(moving) < 5:
            return 1.0
        return float(np.clip(self.model.open_q95 / max(float(np.quantile(moving, 0.95)), 1e-3), *OPEN_GAIN))

    def targets(self, track: MotionTrack) -> np.ndarray:
        """The track's mouth as (opening, width change) descriptors [N, 2] for this person."""
        return sh.track_targets(track.jaw_open, track.lip_width, track.pucker, track.lip_tuck, self.open_gain(track))

    def chunks(self, src: np.ndarray, targets: np.ndarray, fps: float, batch: int = 16):
        """Yields (start, stop, frames [B,H,W,3] uint8 on the device): video frames `src` [N]
        with their mouths set to `targets` [N, 2] (opening, width change)."""
        lm = self.face.landmarks[src]
        found = self.face.found[src]
        if self.bank is not None:
            pose = np.where(found[:, None], self.model.describe(lm)[:, 2:], 0.0)  # no face: any pose will do
            want = np.concatenate([targets, pose], 1).astype(np.float32)
            idx, w = self.bank.select(want, fps)
        for s in range(0, len(src), batch):
            e = min(len(src), s + batch)
            frames = torch.from_numpy(self.video.frames(src[s:e])).to(self.device)
            sel = np.flatnonzero(found[s:e])
            if len(sel):
                f = s + sel
                own = lm[f][:, list(sh.WARP_POINTS), :2]
                tgt = self.model.targets(lm[f], targets[f])
                part = frames[sel]
                if self.bank is not None:
                    ii, ww = self.bank.agree(part, self.model.to_canonical(lm[f]), idx[f], w[f])
                    ii = torch.as_tensor(ii, device=self.device)
                    mouths, points, ww = self.bank.crops[ii], self.bank.points[ii], torch.as_tensor(ww)
                else:
                    mouths, points = self.painted.render(targets[f])
                    ww = torch.ones(len(f), 1)
                part = self.compositor(part, mouths, points, ww, tgt, own, self.scale[src[f]])
                frames[sel] = part
            yield s, e, frames


def dub(video, audio, out: str | os.PathLike, config: GenerateConfig | None = None, *, fps: float | None = None,
        video_fps: float | None = None, device: str | torch.device | None = None,
        model_dir: str | os.PathLike | None = None, progress: Progress | None = None,
        tracking_progress: Progress | None = None, analyzer=None, **overrides):
    """Re-sync the person in `video` to the speech in `audio`; write an MP4 to `out`.

    `video`: a path, or frames [N,H,W,3] (uint8, or float 0..1 as ComfyUI's IMAGE) with
    `video_fps`. `fps`: of the output (default: the video's). The output has the video's size
    and the audio's length: a shorter video plays forward and back, a longer one is cut.
    Settings as for `generate` (see GenerateConfig); those only a photo needs are refused.
    """
    from ..face import FaceAnalyzer
    from ..models import ensure_face_models
    from ..motion.post import postprocess
    from ..pipeline import GenerateResult, make_motion, prepare_audio, resolve_device
    from ..video.output import check_output
    from ..video.writer import Mp4Writer, choose_encoder

    cfg = GenerateConfig(**{**(config.to_dict() if config else {}), **overrides}).validate()
    check_dub_config(cfg)
    out = check_output(out, (video, audio))
    dev = resolve_device(device)
    source = open_video(video, video_fps)
    if fps is None and cfg.fps != GenerateConfig.fps:
        fps = cfg.fps  # asked for in the settings
    out_fps = float(fps) if fps is not None else source.fps
    if not 1.0 <= out_fps <= 120.0:
        raise SonicInputError(f"fps must be between 1 and 120, got {out_fps:g}.")
    cfg.fps = out_fps
    timings: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - t
        t = now

    clip, speech = prepare_audio(audio, cfg, dev)
    lap("audio")
    pool = ThreadPoolExecutor(1, thread_name_prefix="sonic-motion")
    try:
        motion = pool.submit(make_motion, speech, cfg)
        ensure_face_models(model_dir)
        analyzer = analyzer or FaceAnalyzer(model_dir=model_dir, device=dev)
        dubber = Dubber(source, analyzer, dev, cfg.face_index, progress=tracking_progress, source=dub_source(cfg),
                        painter=cfg.mouth_painter, steps=cfg.inference_steps, model_dir=model_dir)
        lap("track")
        track = postprocess(motion.result(), cfg.lip_align, cfg.alignment_offset, cfg.smooth_motion,
                            cfg.auto_align, speech.loudness)
        lap("motion")
    finally:
        pool.shutdown(wait=False)
    n = track.num_frames
    src = dubber.timeline(n, out_fps)
    targets = dubber.targets(track) * np.float32([cfg.dynamic_scale, 1.0])
    width, height = source.width // 2 * 2, source.height // 2 * 2
    notes = list(track.notes)
    if dubber.missing:
        notes.append(f"{dubber.missing} of {dubber.num_frames} video frames show no trackable face; they are kept "
                     "as they were")
    if width != source.width or height != source.height:
        notes.append(f"the video is {source.width}x{source.height}; H.264 needs even sides, so the output is "
                     f"{width}x{height} (the last row or column is dropped)")
    codec, workers = choose_encoder(width, height, cfg.encoder, cfg.encode_workers)
    batch = cfg.batch_size or max(1, min(32, (8 if dev.type == "cpu" else 64) * 1024 * 1024 // (width * height * 4)))
    with source, Mp4Writer(out, width, height, out_fps, audio=clip, crf=cfg.crf, preset=cfg.preset, codec=codec,
                           workers=workers, total_frames=n, encode_ahead=True) as writer:
        for _, stop, frames in dubber.chunks(src, targets, out_fps, batch):
            writer.write(frames[:, :height, :width])
            if progress is not None:
                progress(stop, n)
    lap("render_encode")
    return GenerateResult(path=out, frames=n, seconds=n / out_fps, width=width, height=height, fps=out_fps,
                          device=str(dev), timings=timings, notes=notes)
