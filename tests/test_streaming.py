"""Streaming and scale (issue #6), checked on CPU without timing.

* chunked rendering + streamed encoding give the same video as one big batch;
* the parallel-segment x264 writer gives a valid stream with the same picture quality;
* peak memory of a whole run does not grow with the audio's length.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sonic_core.config import GenerateConfig
from .evaluate import probe_mp4, psnr, read_video_frames
from sonic_core.video import Mp4Writer


from .conftest import EXAMPLES, REPO
from .speech import synthesize

RES = 128


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "speech.wav"
    synthesize("Bob made a map of the big blue bay, and we walked all the way home.", path, voice="en-us")
    return path


@pytest.fixture(scope="module")
def scene(speech_wav, analyzer, models_dir):
    from sonic_core.pipeline import make_motion, prepare_audio, prepare_portrait

    cfg = GenerateConfig(min_resolution=RES).validate()
    clip, speech = prepare_audio(speech_wav, cfg)
    portrait, crop, lm = prepare_portrait(EXAMPLES / "grace_hopper.jpg", cfg, analyzer)
    return cfg, clip, make_motion(speech, cfg), portrait, crop, lm


def _animator(scene, models_dir, batch):
    import torch

    from sonic_core.pipeline import Animator

    cfg, _, _, portrait, crop, lm = scene
    c = GenerateConfig(**{**cfg.to_dict(), "batch_size": batch}).validate()
    return Animator(portrait, crop, lm, c, torch.device("cpu"), models_dir)


def test_chunked_render_equals_one_batch(scene, models_dir):
    track = scene[2]
    n = track.num_frames
    whole = _animator(scene, models_dir, n).render(track, 0, n).numpy()
    chunked = np.concatenate([f.numpy() for _, _, f in _animator(scene, models_dir, 7).chunks(track)])
    assert chunked.shape == whole.shape == (n, RES, RES, 3)
    assert np.array_equal(chunked, whole)
    assert whole.std(axis=0).max() > 10  # the face really moves: the comparison is not of still frames


def test_streamed_mp4_equals_one_batch_mp4(scene, models_dir, tmp_path):
    from sonic_core.pipeline import write_mp4

    cfg, clip, track = scene[:3]
    outs = []
    for batch in (track.num_frames, 5):
        out = tmp_path / f"b{batch}.mp4"
        write_mp4(_animator(scene, models_dir, batch), track, clip, out, cfg.crf, cfg.preset, encoder="libx264")
        outs.append(read_video_frames(out))
    assert len(outs[0]) == track.num_frames
    assert np.array_equal(outs[0], outs[1])


def test_parallel_segments_make_one_valid_stream(scene, models_dir, tmp_path):
    """3 x264 instances on 9-frame segments: every frame present, in order, same quality as one
    encoder, audio as long as the video, a keyframe at each segment start."""
    import av

    cfg, clip, track = scene[:3]
    frames = _animator(scene, models_dir, track.num_frames).render(track, 0, track.num_frames).numpy()
    decoded, sizes = {}, {}
    for workers in (1, 3):
        out = tmp_path / f"w{workers}.mp4"
        with Mp4Writer(out, RES, RES, cfg.fps, audio=clip, workers=workers, segment_frames=9, encode_ahead=True) as w:
            for k in range(0, len(frames), 16):
                w.write(frames[k:k + 16])
        info = probe_mp4(out)
        assert info["video_frames"] == len(frames)
        assert info["audio_duration"] == pytest.approx(len(frames) / cfg.fps, abs=0.03)
        decoded[workers] = read_video_frames(out)
        sizes[workers] = out.stat().st_size
        with av.open(str(out)) as c:
            keys = [i for i, p in enumerate(c.demux(c.streams.video[0])) if p.size and p.is_keyframe]
        if workers == 3:
            assert keys == list(range(0, len(frames), 9))
    q1, q3 = psnr(decoded[1], frames), psnr(decoded[3], frames)
    assert q1 > 28 and abs(q3 - q1) < 1.0, (q1, q3)
    # Order and completeness: every frame matches its own source as well as with one encoder
    # (a misplaced or repeated frame would drop far below on moving frames).
    per1 = np.array([psnr(decoded[1][i], frames[i]) for i in range(len(frames))])
    per3 = np.array([psnr(decoded[3][i], frames[i]) for i in range(len(frames))])
    assert (per3 > per1 - 1.5).all(), np.round(per1 - per3, 2)


def test_encoder_choice_is_explicit_and_overridable():
    from sonic_core.errors import SonicInputError
    from sonic_core.video.writer import auto_workers, choose_encoder

    assert choose_encoder(1024, 1024, "libx264", 3) == ("libx264", 3)
    assert auto_workers(1024, 1024, cpus=2) == 1 and auto_workers(1024, 1024, cpus=16) == 8
    assert auto_workers(256, 256, cpus=16) == 1
    with pytest.raises(SonicInputError, match="encoder"):
        choose_encoder(512, 512, "mpeg4")
    with pytest.raises(SonicInputError, match="encode_workers"):
        GenerateConfig(encode_workers=-1).validate()


_MEM_CHILD = r"""
import json, sys, wave
import numpy as np
sys.path.insert(0, sys.argv[4])
from sonic_core import generate
from sonic_core.audio import load_audio
src = load_audio(sys.argv[1], mono=True)
seconds = float(sys.argv[2])
x = np.tile(src.samples[0], int(np.ceil(seconds * src.sample_rate / src.samples.shape[1])))[: int(seconds * src.sample_rate)]
with wave.open(sys.argv[3] + ".wav", "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(src.sample_rate)
    w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
generate(sys.argv[5], sys.argv[3] + ".wav", sys.argv[3], min_resolution=128, device="cpu", model_dir=sys.argv[6])
# VmHWM, not ru_maxrss: Linux keeps the parent's (pytest's) high-water mark in ru_maxrss across exec.
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"rss_gb": hwm / 1e6}))
"""


def test_peak_memory_does_not_grow_with_audio_length(speech_wav, models_dir, tmp_path):
    """Peak RSS of a fresh process rendering 20 s vs 3 minutes of speech at 128².

    The decoded audio itself is held (the MP4's sound track is encoded from it), so the
    bound allows a few copies of the *added audio* plus 5 %; anything that kept frames or
    per-frame spectra would exceed it (3 minutes of 128² frames alone are 220 MB).
    """
    from sonic_core.audio import load_audio

    rate = load_audio(speech_wav).sample_rate
    peaks = {}
    for seconds in (20, 180):
        proc = subprocess.run([sys.executable, "-c", _MEM_CHILD, str(speech_wav), str(seconds),
                               str(tmp_path / f"m{seconds}.mp4"), str(REPO), str(EXAMPLES / "grace_hopper.jpg"),
                               str(models_dir)], capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        peaks[seconds] = json.loads(proc.stdout.strip().splitlines()[-1])["rss_gb"]
        assert probe_mp4(tmp_path / f"m{seconds}.mp4")["video_frames"] == int(np.ceil(seconds * 25 - 1e-6))
    added_audio_gb = (180 - 20) * rate * 4 / 1e9
    print("peak RSS GB", peaks, "added audio GB", round(added_audio_gb, 4))
    assert peaks[180] - peaks[20] <= 0.05 * peaks[20] + 4 * added_audio_gb, peaks


def test_blockwise_speech_analysis_equals_one_pass(speech_wav):
    """Long audio is analysed in blocks (bounded memory); the result must not depend on the blocks."""
    from sonic_core.audio import load_audio
    from sonic_core.audio.features import resample_mono
    from sonic_core.motion.phonetic import acoustic_features

    clip = load_audio(speech_wav, mono=True)
    x = np.tile(clip.samples[0], 4)
    one = resample_mono(x, clip.sample_rate, 16000, block_s=1e9)
    blocks = resample_mono(x, clip.sample_rate, 16000, block_s=1.3)
    assert np.array_equal(one, blocks)
    whole, parts = acoustic_features(one, block=10**9), acoustic_features(one, block=97)
    assert set(whole) == set(parts)
    for k in whole:
        np.testing.assert_allclose(parts[k], whole[k], rtol=1e-6, atol=1e-9, err_msg=k)
