"""The command line: a real run prints progress and a summary; user errors exit 2 with a message."""
from __future__ import annotations

import os
import subprocess
import sys

from .evaluate import probe_mp4

from .conftest import DATA, EXAMPLES, REPO


def _run(args, models_dir):
    env = dict(os.environ, SONIC_MODELS_DIR=str(models_dir))
    return subprocess.run([sys.executable, "-m", "sonic_core", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_generate_prints_progress_and_summary(tmp_path, models_dir):
    out = tmp_path / "cli.mp4"
    r = _run(["generate", "--image", str(EXAMPLES / "astronaut.png"), "--audio", str(EXAMPLES / "speech.wav"),
              "--out", str(out), "--min-resolution", "128", "--duration", "1.2", "--fps", "20"], models_dir)
    assert r.returncode == 0, r.stderr
    assert "24/24 frames" in r.stderr
    assert "24 frames, 1.20 s at 20 fps, 128x128" in r.stdout
    info = probe_mp4(out)
    assert info["video_frames"] == 24 and info["width"] == 128


def test_user_errors_exit_2_with_message_and_no_file(tmp_path, models_dir):
    out = tmp_path / "x.mp4"
    cases = [
        (["--image", str(DATA / "coffee.png"), "--audio", str(EXAMPLES / "speech.wav")], "No face found in"),
        (["--image", str(EXAMPLES / "astronaut.png"), "--audio", str(REPO / "README.md")], "README.md"),
        (["--image", str(EXAMPLES / "astronaut.png"), "--audio", str(EXAMPLES / "speech.wav"),
          "--expand-ratio", "9"], "expand_ratio"),
    ]
    for args, needle in cases:
        r = _run(["generate", *args, "--out", str(out), "--min-resolution", "128"], models_dir)
        assert r.returncode == 2, r.stderr
        assert needle in r.stderr and "Traceback" not in r.stderr
        assert not any(tmp_path.iterdir())
