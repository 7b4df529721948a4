"""Nothing lost, nothing overwritten, the same frames every time: what a careful or adversarial user tries."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import wave

import numpy as np
import pytest

import sonic_core
from sonic_core import SonicInputError
from sonic_core.audio import load_audio
from .evaluate import probe_mp4, read_video_frames
from sonic_core.video.output import check_output, sweep_stale_partials

from .conftest import EXAMPLES, REPO

SPEECH = EXAMPLES / "speech.wav"
FACE = EXAMPLES / "grace_hopper.jpg"


def _cli(args, models_dir, **kw):
    env = dict(os.environ, SONIC_MODELS_DIR=str(models_dir))
    return subprocess.run([sys.executable, "-m", "sonic_core", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, **kw)


def _wav(path, channels: int, seconds: float = 1.0, rate: int = 16000):
    x = (np.random.default_rng(0).standard_normal((int(seconds * rate), channels)) * 3000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.tobytes())
    return path


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------------------------ outputs
def test_an_output_that_is_an_input_is_refused_before_any_work(tmp_path, models_dir):
    """--out equal to the photo or the audio (also through a link) used to replace the user's file."""
    photo, audio = tmp_path / "face.jpg", tmp_path / "talk.wav"
    photo.write_bytes(FACE.read_bytes())
    audio.write_bytes(SPEECH.read_bytes())
    link = tmp_path / "link.mp4"
    link.symlink_to(audio)
    before = (photo.read_bytes(), audio.read_bytes())
    for out in (photo, audio, link):
        if out.suffix != ".mp4":
            with pytest.raises(SonicInputError):  # not even an MP4 name
                check_output(out, (photo, audio))
    with pytest.raises(SonicInputError, match="is the input"):
        check_output(link, (photo, audio))
    r = _cli(["generate", "--image", str(photo), "--audio", str(audio), "--out", str(link)], models_dir)
    assert r.returncode == 2 and "is the input" in r.stderr and "Traceback" not in r.stderr
    assert (photo.read_bytes(), audio.read_bytes()) == before


def test_output_names_folders_and_unwritable_places(tmp_path):
    assert check_output(tmp_path / "talk") == str(tmp_path / "talk.mp4")  # no suffix: .mp4 added
    for ok in ("a.mp4", "b.MOV", "c.m4v"):
        assert check_output(tmp_path / ok) == str(tmp_path / ok)
    with pytest.raises(SonicInputError, match=r"\.mp4"):
        check_output(tmp_path / "talk.avi")
    with pytest.raises(SonicInputError, match="is a folder"):
        check_output(tmp_path)
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(SonicInputError, match="is a folder"):
        check_output(tmp_path / "dir.mp4")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root may write anywhere: nothing to check
            pytest.skip("running as a user that may write into read-only folders")
        with pytest.raises(SonicInputError, match="Cannot write"):
            check_output(locked / "x.mp4")
    finally:
        locked.chmod(0o700)
    assert _leftovers(tmp_path) == []


def test_no_partial_file_follows_a_planted_link(tmp_path, models_dir):
    """The hidden file used to be `.NAME.partial.mp4`: a link planted under that name had its
    target overwritten. Now the partial file is new and uniquely named, and the target is untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".out.mp4.partial.mp4").symlink_to(victim)
    r = sonic_core.generate(FACE, SPEECH, tmp_path / "out.mp4", min_resolution=64, duration=0.5,
                            motion_model="loudness", model_dir=models_dir, device="cpu")
    assert victim.read_text() == "precious"
    assert probe_mp4(r.path)["video_frames"] == 13


def test_two_jobs_writing_one_name_both_finish_with_a_valid_file(tmp_path, models_dir):
    out = tmp_path / "same.mp4"
    errors, results = [], []

    def job(seed):
        try:
            results.append(sonic_core.generate(FACE, SPEECH, out, min_resolution=64, duration=1.0, seed=seed,
                                               motion_model="loudness", model_dir=models_dir, device="cpu"))
        except Exception as e:  # noqa: BLE001 - recorded and asserted on below
            errors.append(e)

    threads = [threading.Thread(target=job, args=(s,)) for s in (1, 2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(results) == 2
    assert probe_mp4(out)["video_frames"] == 25
    assert _leftovers(tmp_path) == []


def test_stale_partial_files_of_dead_jobs_are_swept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".sonic-{dead.pid}-abc-talk.mp4.partial.mp4"
    mine = tmp_path / f".sonic-{os.getpid()}-abc-talk.mp4.partial.mp4"
    other = tmp_path / ".someone-else.partial.mp4"
    for p in (stale, mine, other):
        p.write_bytes(b"x")
    assert sweep_stale_partials(str(tmp_path)) == [str(stale)]
    assert not stale.exists() and mine.exists() and other.exists()


def _children(pid: int) -> set[int]:
    """PIDs whose parent is `pid` (Linux /proc)."""
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.add(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux /proc to see the job's helper processes")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_job_leaves_no_file_and_no_helpers(tmp_path, models_dir, sig):
    """SIGTERM used to leave the hidden partial file (the README promises none), and after SIGKILL the
    phone decoders outlived the job by ~5 s. SIGTERM now cleans up like Ctrl-C; after SIGKILL the
    helpers die with the job and the next run into the folder sweeps the partial file."""
    out = tmp_path / "long.mp4"
    env = dict(os.environ, SONIC_MODELS_DIR=str(models_dir))
    proc = subprocess.Popen([sys.executable, "-m", "sonic_core", "generate", "--image", str(FACE), "--audio",
                             str(SPEECH), "--out", str(out), "--min-resolution", "256", "--duration", "60"],
                            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.endswith(".partial.mp4") for p in tmp_path.iterdir()):
        time.sleep(0.2)
    time.sleep(1.0)  # well into the render
    helpers = _children(proc.pid)
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    time.sleep(1.0)
    assert not [p for p in helpers if _alive(p)], "helper processes outlived the job"
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "interrupted" in err and "Traceback" not in err, err
        assert list(tmp_path.iterdir()) == []
    else:
        assert sweep_stale_partials(str(tmp_path)) and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ inputs
@pytest.mark.parametrize("channels", [8, 32])
def test_audio_with_many_channels_is_mixed_down(tmp_path, channels, models_dir):
    """A 7.1 WAV (8 channels) or 32 channels crashed the process (exit 139) inside libswresample."""
    wav = _wav(tmp_path / f"c{channels}.wav", channels)
    code = (f"import sonic_core; r = sonic_core.generate({str(FACE)!r}, {str(wav)!r}, {str(tmp_path / 'o.mp4')!r}, "
            f"min_resolution=64, motion_model='loudness', model_dir={str(models_dir)!r}, device='cpu'); print(r.frames)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("25")
    x = np.random.default_rng(1).standard_normal((channels, 8000)).astype(np.float32) * 0.1
    clip = load_audio((x, 16000), sample_rate=22050)  # an array with as many channels
    assert clip.samples.shape == (channels, 11025)


def test_settings_and_images_give_error_lines(tmp_path, models_dir):
    from PIL import Image

    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    cases = [
        (["--seed", "-1"], "seed"),
        (["--seed", str(2 ** 64)], "seed"),
        (["--duration", "1e7"], "duration"),
        (["--image", str(tiny)], "tiny.png"),
        (["--out", str(tmp_path)], "is a folder"),
        (["--out", str(tmp_path / "x.avi")], ".mp4"),
    ]
    for extra, needle in cases:
        args = {"--image": str(FACE), "--audio": str(tmp_path / "missing.wav"), "--out": str(tmp_path / "o.mp4")}
        args.update(dict(zip(extra[::2], extra[1::2])))
        if "--image" not in extra:
            args["--audio"] = str(SPEECH)
        r = _cli(["generate", *[v for kv in args.items() for v in kv], "--min-resolution", "64"], models_dir)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, (extra, r.stderr)
    # The image is checked before the audio: a tiny image with a missing audio file names the image.
    assert _leftovers(tmp_path) == [] and not (tmp_path / "o.mp4").exists()


def test_missing_face_models_without_network_say_how_to_get_them(tmp_path):
    env = dict(os.environ, SONIC_MODELS_DIR=str(tmp_path / "empty"), SONIC_MEDIAPIPE_WHEEL=str(tmp_path / "nope.whl"))
    r = subprocess.run([sys.executable, "-m", "sonic_core", "generate", "--image", str(FACE), "--audio", str(SPEECH),
                        "--out", str(tmp_path / "o.mp4")], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "SONIC_MEDIAPIPE_WHEEL" in r.stderr or "fetch-models" in r.stderr


# ------------------------------------------------------------------------------------ determinism
def test_same_inputs_same_frames_in_fresh_processes_and_side_by_side(tmp_path, models_dir):
    """5 of 18 identical CLI runs used to differ (Silero's loader set the thread count to 1 while the
    face stage ran). Fresh processes, and 4 jobs at once in one fresh process, give identical frames."""
    args = ["generate", "--image", str(FACE), "--audio", str(SPEECH), "--min-resolution", "96", "--duration", "2",
            "-q"]
    alone = []
    for k in range(5):
        r = _cli(args + ["--out", str(tmp_path / f"alone{k}.mp4")], models_dir)
        assert r.returncode == 0, r.stderr
        alone.append(read_video_frames(tmp_path / f"alone{k}.mp4"))
    for k in range(1, 5):
        assert np.array_equal(alone[k], alone[0]), f"fresh run {k} differs"
    code = f"""
import threading, sonic_core
outs = [{str(tmp_path)!r} + f'/side{{k}}.mp4' for k in range(4)]
ts = [threading.Thread(target=sonic_core.generate, args=({str(FACE)!r}, {str(SPEECH)!r}, o),
                       kwargs=dict(min_resolution=96, duration=2.0, model_dir={str(models_dir)!r}, device='cpu'))
      for o in outs]
[t.start() for t in ts]; [t.join() for t in ts]
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for k in range(4):
        assert np.array_equal(read_video_frames(tmp_path / f"side{k}.mp4"), alone[0]), f"job {k} side by side differs"


def test_every_numeric_setting_is_checked_against_its_one_declared_range():
    """config.RANGES is the one declaration: each bound is accepted and a step past it is refused
    with an error naming the setting (the CLI's help and the node widgets read the same table)."""
    from sonic_core.config import INT_SETTINGS, RANGES, GenerateConfig

    for name, rng in RANGES.items():
        step = 1 if name in INT_SETTINGS else 0.01
        lows = [rng.lo] if name != "duration" else [step]  # duration: positive, or unset
        for ok in lows + ([rng.hi] if rng.hi is not None else []):
            GenerateConfig(**{name: ok}).validate()
        bad = [rng.lo - step] + ([rng.hi + step] if rng.hi is not None else [])
        for value in bad:
            with pytest.raises(SonicInputError, match=f"'{name}'"):
                GenerateConfig(**{name: value}).validate()
        if name in INT_SETTINGS:
            with pytest.raises(SonicInputError, match="whole number"):
                GenerateConfig(**{name: rng.lo + 0.5}).validate()


def test_the_video_gets_the_permissions_of_any_new_file(tmp_path):
    """The unique temporary file is made owner-only; the finished video must not stay so (a web
    server or another user of a shared output folder could not read it)."""
    from sonic_core.video.output import _umask
    from sonic_core.video.writer import Mp4Writer

    out = tmp_path / "clip.mp4"
    with Mp4Writer(out, 64, 64, 25) as w:
        w.write(np.zeros((5, 64, 64, 3), np.uint8))
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()
    mask = os.umask(0o022)
    os.umask(mask)
    assert _umask() == mask  # read without setting it, as os.umask reports it
