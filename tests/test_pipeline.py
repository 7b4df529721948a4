"""End to end: a real portrait + synthesized speech -> MP4, measured on the rendered frames."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sonic_core import GenerateConfig, SonicInputError
from .evaluate import landmarks_of_frames, lip_gap, probe_mp4, psnr, read_video_frames
from sonic_core.face import FaceNotFoundError

from .conftest import DATA, EXAMPLES
from .speech import silence, synthesize, write_audio

FPS = 25.0
RES = 256


@pytest.fixture(scope="module")
def speech_with_pause(tmp_path_factory) -> tuple[Path, np.ndarray, int]:
    """Two phrases of real (espeak-ng) speech with a 1.2 s pause between them, 22.05 kHz mono."""
    from sonic_core.audio import load_audio

    d = tmp_path_factory.mktemp("speech")
    a = load_audio(synthesize("Hello there, my name is Grace.", d / "a.wav"))
    b = load_audio(synthesize("Open the big blue box, papa.", d / "b.wav"))
    sr = a.sample_rate
    gap = silence(1.2, sr)
    samples = np.concatenate([a.samples, gap, b.samples, silence(0.3, sr)], axis=1).astype(np.float32)
    path = d / "speech.wav"
    write_audio(path, samples, sr)
    return path, samples, sr


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, speech_with_pause, models_dir, analyzer):
    from sonic_core.pipeline import generate

    path, _, _ = speech_with_pause
    out = tmp_path_factory.mktemp("render") / "talk.mp4"
    result = generate(EXAMPLES / "grace_hopper.jpg", path, out, min_resolution=RES, fps=FPS,
                      device="cpu", model_dir=models_dir, analyzer=analyzer, seed=3)
    return result, read_video_frames(out)


def test_video_covers_audio_and_carries_it(rendered, speech_with_pause):
    result, frames = rendered
    _, samples, sr = speech_with_pause
    audio_s = samples.shape[1] / sr
    info = probe_mp4(result.path)
    assert info["width"] == RES and info["height"] == RES
    assert len(frames) == result.frames
    assert abs(len(frames) / FPS - audio_s) <= 1.0 / FPS + 1e-6
    assert len(frames) / FPS >= audio_s - 1e-6, "video must never be shorter than the audio"
    assert info["audio_codec"] == "aac" and abs(info["audio_duration"] - audio_s) <= 1.5 / FPS
    assert not list(Path(result.path).parent.glob("*.partial*")), "temporary file left behind"


def test_mouth_opens_on_speech_and_rests_in_silence(rendered, speech_with_pause, analyzer, models_dir):
    from sonic_core.audio.features import analyze_speech

    result, frames = rendered
    _, samples, sr = speech_with_pause
    speech = analyze_speech(samples.mean(0), sr, FPS, len(frames))
    ref = analyzer.analyze(frames[0])[1]
    gap = lip_gap(landmarks_of_frames(frames, analyzer, ref))
    loud = speech.loudness > 0.6
    quiet = ~speech.speech
    # Silence frames well inside the pause (away from the attack/release of the mouth).
    quiet &= np.convolve(quiet.astype(float), np.ones(7) / 7, mode="same") > 0.99
    assert loud.sum() >= 10 and quiet.sum() >= 10
    open_gap, rest_gap = float(np.median(gap[loud])), float(np.median(gap[quiet]))
    # (FaceMesh reads a dark mouth interior ~15 % less open at mid openings than the first painter's bright slab.)
    assert open_gap > rest_gap + 0.04, (open_gap, rest_gap)
    assert float(np.percentile(gap[quiet], 90)) < open_gap * 0.5, "mouth should be (nearly) closed in the pause"
    # Opening follows loudness over the whole clip.
    assert np.corrcoef(gap, speech.loudness)[0, 1] > 0.5


def test_background_outside_head_is_the_photo(rendered, speech_with_pause, models_dir, analyzer):
    """The renderer leaves everything outside the moving head region exactly as in the photo.

    Measured on the renderer's frames (before H.264, whose own loss on this detailed flag
    background is ~36 dB at CRF 18 and is no property of the animation); the encoded video
    is checked against the photo with a looser bound.
    """
    from sonic_core.audio.features import analyze_speech
    from sonic_core.models import load_face_topology
    from sonic_core.motion import loudness_motion
    from sonic_core.pipeline import prepare_portrait
    from sonic_core.render.renderer import PortraitRenderer

    result, frames = rendered
    _, samples, sr = speech_with_pause
    cfg = GenerateConfig(min_resolution=RES).validate()
    _, crop, lm = prepare_portrait(EXAMPLES / "grace_hopper.jpg", cfg, analyzer)
    renderer = PortraitRenderer(crop, lm, load_face_topology(models_dir), "cpu", seed=3)
    rig = renderer.rig
    moving_tris = rig.moving_vertices[rig.triangles].any(dim=1).numpy()
    static = ~moving_tris[rig.tri_map.numpy()]
    assert static.mean() > 0.15, "test needs some background in the crop"
    track = loudness_motion(analyze_speech(samples.mean(0), sr, FPS), seed=3)
    loud = int(np.argmax(track.jaw_open))
    raw = renderer.render(track, max(0, loud - 4), loud + 4).numpy()
    assert min(psnr(f, crop, static) for f in raw) > 40.0
    # Something did move: the head region differs from the photo at the loudest frame.
    assert psnr(raw[4], crop, ~static) < 35.0
    assert min(psnr(f, crop, static) for f in frames[::10]) > 30.0


def test_same_seed_same_frames(tmp_path, speech_with_pause, models_dir, analyzer):
    from sonic_core.pipeline import generate

    path, _, _ = speech_with_pause
    outs = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        out = tmp_path / f"{name}.mp4"
        generate(EXAMPLES / "grace_hopper.jpg", path, out, min_resolution=128, duration=2.0, device="cpu",
                 model_dir=models_dir, analyzer=analyzer, seed=seed, crf=0)
        outs.append(read_video_frames(out))
    assert np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2]), "seed should change idle motion"


def test_duration_trims_and_pads(tmp_path, speech_with_pause, models_dir, analyzer):
    from sonic_core.pipeline import generate

    path, samples, sr = speech_with_pause
    for duration in (1.5, samples.shape[1] / sr + 1.0):
        out = tmp_path / f"d{duration:.2f}.mp4"
        r = generate(EXAMPLES / "grace_hopper.jpg", path, out, min_resolution=128, duration=duration,
                     device="cpu", model_dir=models_dir, analyzer=analyzer)
        info = probe_mp4(out)
        assert abs(info["video_frames"] / FPS - duration) <= 1.0 / FPS + 1e-6
        assert r.frames == info["video_frames"]


def test_full_frame_output_is_even_and_seamless(tmp_path, speech_with_pause, models_dir, analyzer):
    from sonic_core.imageio import load_image
    from sonic_core.pipeline import generate

    path, _, _ = speech_with_pause
    out = tmp_path / "full.mp4"
    r = generate(EXAMPLES / "astronaut.png", path, out, min_resolution=256, duration=1.0, output="full",
                 max_full_side=501, device="cpu", model_dir=models_dir, analyzer=analyzer, crf=4)
    assert r.width % 2 == 0 and r.height % 2 == 0 and max(r.width, r.height) <= 501
    frames = read_video_frames(out)
    from PIL import Image

    src = np.asarray(Image.fromarray(load_image(EXAMPLES / "astronaut.png")).resize((r.width, r.height), Image.LANCZOS))
    # Whole frame, seam included, stays close to the photo (only the face moves).
    assert psnr(frames[0], src) > 30.0


def test_expand_ratio_and_min_resolution_change_the_crop(analyzer):
    from sonic_core.pipeline import prepare_portrait

    boxes = {}
    for ratio in (0.15, 0.5):
        portrait, crop, lm = prepare_portrait(EXAMPLES / "astronaut.png", GenerateConfig(expand_ratio=ratio, min_resolution=200).validate(), analyzer)
        x0, y0, x1, y1 = portrait.crop_box
        assert x1 - x0 == y1 - y0 and crop.shape == (200, 200, 3)
        h, w = portrait.image.shape[:2]
        assert 0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h
        boxes[ratio] = x1 - x0
        d = portrait.detection.box
        face = max(d[2] - d[0], d[3] - d[1])
        assert abs((x1 - x0) - min(face * (1 + 2 * ratio), w, h)) <= 2
    assert boxes[0.5] > boxes[0.15]


@pytest.mark.parametrize("kind", ["gray", "rgba", "16bit", "huge"])
def test_unusual_images_work(tmp_path, kind, speech_with_pause, models_dir, analyzer):
    from PIL import Image

    from sonic_core.pipeline import generate

    img = Image.open(EXAMPLES / "grace_hopper.jpg")
    p = tmp_path / f"{kind}.png"
    if kind == "gray":
        img.convert("L").save(p)
    elif kind == "rgba":
        img.convert("RGBA").save(p)
    elif kind == "16bit":
        arr = (np.asarray(img.convert("L"), np.uint16) * 257)
        Image.fromarray(arr).save(p)
    else:  # a portrait placed in a very large canvas: 8000 x 8000
        big = Image.new("RGB", (8000, 8000), (90, 110, 140))
        big.paste(img.resize((1200, 1400)), (3000, 2500))
        p = tmp_path / "huge.jpg"
        big.save(p, quality=80)
    out = tmp_path / f"{kind}.mp4"
    path, _, _ = speech_with_pause
    r = generate(p, path, out, min_resolution=128, duration=0.6, device="cpu", model_dir=models_dir, analyzer=analyzer)
    assert out.exists() and r.frames == 15


def test_no_face_gives_clear_error_and_no_file(tmp_path, speech_with_pause, models_dir, analyzer):
    from sonic_core.pipeline import generate

    path, _, _ = speech_with_pause
    out = tmp_path / "none.mp4"
    with pytest.raises(FaceNotFoundError) as e:
        generate(DATA / "coffee.png", path, out, min_resolution=128, device="cpu", model_dir=models_dir, analyzer=analyzer)
    assert "coffee.png" in str(e.value)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["empty", "corrupt", "zero_length", "missing"])
def test_bad_audio_gives_clear_error_and_no_file(tmp_path, kind, models_dir, analyzer):
    from sonic_core.pipeline import generate

    audio = tmp_path / f"{kind}.wav"
    if kind == "empty":
        audio.write_bytes(b"")
    elif kind == "corrupt":
        audio.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + os.urandom(2000))
    elif kind == "zero_length":
        write_audio(audio, np.zeros((1, 0), np.float32), 16000)
    out = tmp_path / "out" / "x.mp4"
    with pytest.raises(SonicInputError) as e:
        generate(EXAMPLES / "grace_hopper.jpg", audio, out, min_resolution=128, device="cpu",
                 model_dir=models_dir, analyzer=analyzer)
    assert audio.name in str(e.value)
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_silent_audio_gives_still_mouth(tmp_path, models_dir, analyzer):
    from sonic_core.pipeline import generate

    audio = tmp_path / "silence.wav"
    write_audio(audio, silence(1.0, 16000), 16000)
    out = tmp_path / "still.mp4"
    r = generate(EXAMPLES / "grace_hopper.jpg", audio, out, min_resolution=192, device="cpu",
                 model_dir=models_dir, analyzer=analyzer)
    frames = read_video_frames(out)
    assert r.frames == 25
    ref = analyzer.analyze(frames[0])[1]
    gap = lip_gap(landmarks_of_frames(frames, analyzer, ref))
    assert gap.max() - gap.min() < 0.03


def test_bad_settings_are_named():
    for kwargs, name in (({"min_resolution": 10}, "min_resolution"), ({"expand_ratio": -1}, "expand_ratio"),
                         ({"fps": 0}, "fps"), ({"output": "gif"}, "output"), ({"inference_steps": 0}, "inference_steps"),
                         ({"duration": -2}, "duration")):
        with pytest.raises(SonicInputError, match=name):
            GenerateConfig(**kwargs).validate()


def test_face_index_picks_another_face(tmp_path, analyzer):
    """Two faces: 0 = the larger one (default), 1 = the smaller; out of range names the count."""
    from PIL import Image

    from sonic_core.pipeline import prepare_portrait

    big = Image.open(EXAMPLES / "grace_hopper.jpg").convert("RGB")
    canvas = Image.new("RGB", (1400, 800), (120, 130, 140))
    canvas.paste(big, (0, 100))
    canvas.paste(Image.open(EXAMPLES / "astronaut.png").convert("RGB").resize((400, 400)), (900, 200))
    p = tmp_path / "two.png"
    canvas.save(p)
    cfg = GenerateConfig(min_resolution=128).validate()
    first, _, _ = prepare_portrait(p, cfg, analyzer)
    cfg.face_index = 1
    second, _, _ = prepare_portrait(p, cfg, analyzer)
    assert first.detection.area > second.detection.area
    assert first.detection.box[0] < 600 < second.detection.box[0]
    cfg.face_index = 5
    with pytest.raises(SonicInputError, match="2 face"):
        prepare_portrait(p, cfg, analyzer)


def test_inference_steps_bounds_the_warp_solver(models_dir, analyzer, speech_with_pause):
    """Few solver iterations leave pixels unplaced under motion; returns vanish by ~8."""
    from sonic_core.audio.features import analyze_speech
    from sonic_core.models import load_face_topology
    from sonic_core.motion import loudness_motion
    from sonic_core.pipeline import prepare_portrait
    from sonic_core.render.renderer import PortraitRenderer

    _, samples, sr = speech_with_pause
    _, crop, lm = prepare_portrait(EXAMPLES / "grace_hopper.jpg", GenerateConfig(min_resolution=256).validate(), analyzer)
    track = loudness_motion(analyze_speech(samples.mean(0), sr, FPS), motion_scale=2.0, seed=1)
    loud = int(np.argmax(track.jaw_open))
    frames = {}
    for steps in (1, 8, 25):
        r = PortraitRenderer(crop, lm, load_face_topology(models_dir), "cpu", max_steps=steps)
        frames[steps] = r.render(track, loud - 2, loud + 2).numpy()
    assert psnr(frames[1], frames[25]) < psnr(frames[8], frames[25])
    assert psnr(frames[8], frames[25]) > 45.0


def test_teeth_follow_the_scene_not_only_the_skin(analyzer, models_dir):
    """A dark-skinned face in a normally exposed photo still gets bright teeth; a grey photo grey ones."""
    from sonic_core.pipeline import prepare_portrait
    from sonic_core.render.mouth.style import estimate_style
    from sonic_core.render.rig import build_rig
    from sonic_core.models import load_face_topology

    cfg = GenerateConfig(min_resolution=256).validate()
    _, crop, lm = prepare_portrait(EXAMPLES / "grace_hopper.jpg", cfg, analyzer)
    rig = build_rig(lm, load_face_topology(models_dir), 256)
    face = rig.tri_map.numpy() < 852  # FaceMesh triangles cover the face only
    dark = crop.astype(np.float32)
    dark[face] *= 0.35  # much darker skin, same scene
    normal = estimate_style(crop, lm, rig.mouth_width)
    darker = estimate_style(dark.astype(np.uint8), lm, rig.mouth_width)
    assert float(darker.teeth.mean()) > 0.6 * float(normal.teeth.mean())
    grey = np.repeat(crop.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
    g = estimate_style(grey, lm, rig.mouth_width).teeth
    assert float(g.max() - g.min()) < 0.02


def test_lips_parted_in_the_photo_close_at_rest_and_open_past_it(analyzer, models_dir):
    """A portrait smiling with its teeth showing: jaw 0 brings the lips together, a small opening (the rig's
    close_span) gives back the photo's mouth, a wide vowel opens past it, and closing folds no face triangle.
    A photo with closed lips gets no closing field at all."""
    from sonic_core.models import load_face_topology
    from sonic_core.pipeline import prepare_portrait
    from sonic_core.render.deform import deform
    from sonic_core.render.renderer import PortraitRenderer
    from sonic_core.render.rig import build_rig
    from sonic_core.types import MotionTrack

    cfg = GenerateConfig(min_resolution=384).validate()
    _, crop, lm = prepare_portrait(EXAMPLES / "astronaut.png", cfg, analyzer)
    r = PortraitRenderer(crop, lm, load_face_topology(models_dir), "cpu")
    rest = r.rig.rest_open
    assert 0.08 < rest < 0.3, rest
    assert r.rig.close_span < rest
    jaws = np.float32([0.0, r.rig.close_span, 0.35])
    n = len(jaws)
    zeros = np.zeros(n, np.float32)
    track = MotionTrack(25.0, jaws, zeros, np.zeros((n, 3), np.float32), np.zeros((n, 2), np.float32), zeros, zeros)
    frames = r.render(track, 0, n).numpy()
    # A frame looks the same whatever else is in its batch (the seam cover samples inside the window).
    alone = np.concatenate([r.render(track, k, k + 1).numpy() for k in range(n)])
    assert np.abs(alone.astype(int) - frames.astype(int)).max() <= 1
    photo, closed, at_rest, wide = lip_gap(landmarks_of_frames(np.concatenate([crop[None], frames]), analyzer, lm))
    # FaceMesh reads closed lips on a smile as partly open (~40-50 % of this photo's opening);
    # without the closing field jaw 0 is the photo itself.
    assert closed < 0.6 * photo, (closed, photo)
    assert abs(at_rest - photo) < 0.15 * photo, (at_rest, photo)
    assert wide > 1.4 * photo, (wide, photo)

    rig = r.rig
    tgt = deform(rig, r.controls(track, 0, 1))[0]
    tris = rig.triangles[~rig.mouth_triangles]

    def area(p):
        a, b, c = p[tris[:, 0]], p[tris[:, 1]], p[tris[:, 2]]
        return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])

    before, after = area(rig.vertices[:, :2]), area(tgt)
    # This smile's upper lip is 2-3 px thick at 384²: slivers along its contours (under ~10 px²)
    # may tip over by a fraction of a pixel; no triangle of visible size (over 25 px²) may.
    big = before.abs() / 2 > 25.0
    assert not bool(((before > 0) != (after > 0))[big].any())

    _, _, lm_g = prepare_portrait(EXAMPLES / "grace_hopper.jpg", cfg, analyzer)
    closed_rig = build_rig(lm_g, load_face_topology(models_dir), 384)
    assert closed_rig.rest_open == 0.0 and float(closed_rig.close_dir.abs().max()) == 0.0


def test_triangle_map_matches_a_per_pixel_reference(analyzer, models_dir):
    """The vectorised rasteriser of the rig (which triangle each pixel belongs to) against a
    plain per-pixel test of every triangle, on the real face mesh of a photo with some
    triangles folded over (as at a turned face's silhouette): properly oriented triangles
    win, then the first one in index order; uncovered pixels take the nearest triangle."""
    from scipy.ndimage import distance_transform_edt

    from sonic_core.models import load_face_topology
    from sonic_core.pipeline import prepare_portrait
    from sonic_core.render.mesh import rasterize_triangle_ids
    from sonic_core.render.rig import build_rig

    _, crop, lm = prepare_portrait(EXAMPLES / "grace_hopper.jpg", GenerateConfig(min_resolution=96).validate(), analyzer)
    size = crop.shape[0]
    rig = build_rig(lm, load_face_topology(models_dir), size)
    verts, tris = rig.vertices[:, :2].double().numpy(), rig.triangles.numpy().copy()
    tris[::37] = tris[::37, ::-1]  # fold some over
    got = rasterize_triangle_ids(verts, tris, size)

    v = verts[tris]
    cross = (v[:, 1, 0] - v[:, 0, 0]) * (v[:, 2, 1] - v[:, 0, 1]) - (v[:, 1, 1] - v[:, 0, 1]) * (v[:, 2, 0] - v[:, 0, 0])
    proper = np.sign(cross) == np.sign(np.sum(cross))
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    px, py = xx.reshape(-1, 1), yy.reshape(-1, 1)
    (ax, ay), (bx, by), (cx, cy) = v[:, 0].T, v[:, 1].T, v[:, 2].T
    den = (by - cy) * (ax - cx) + (cx - bx) * (ay - cy)
    l0 = ((by - cy) * (px - cx) + (cx - bx) * (py - cy)) / den
    l1 = ((cy - ay) * (px - cx) + (ax - cx) * (py - cy)) / den
    inside = (l0 >= -1e-6) & (l1 >= -1e-6) & (1 - l0 - l1 >= -1e-6) & (np.abs(den) >= 1e-9)  # [pixels, tris]
    first_proper = np.where((inside & proper).any(1), np.argmax(inside & proper, 1), -1)
    first_folded = np.where((inside & ~proper).any(1), np.argmax(inside & ~proper, 1), -1)
    ref = np.where(first_proper >= 0, first_proper, first_folded).reshape(size, size)
    assert (ref >= 0).mean() > 0.9 and (tris[::37] != rig.triangles.numpy()[::37]).any()
    _, (iy, ix) = distance_transform_edt(ref < 0, return_indices=True)
    np.testing.assert_array_equal(got, ref[iy, ix])
