"""Where a video goes: checked before any work, written to a unique hidden file, renamed into place.

- `check_output(out, inputs)` runs before decoding or rendering anything: the name must end
  in .mp4, .mov or .m4v (a name without a suffix gets .mp4), must not be a folder or one of
  the inputs (also through links), and the folder must be writable (created if missing).
- `PartialFile` is the file being written: a new, uniquely named hidden file in the output's
  folder, created exclusively (an existing file or a planted link there makes the creation
  fail instead of being followed) and written through its own descriptor; `commit()` renames
  it atomically onto the output, `discard()` deletes it. Two jobs writing one name each write
  their own file; the last to finish wins, and both finish with a complete MP4.
- `sweep_stale_partials(folder)`: partial files of this program left behind by a killed job
  (its process is gone, or the file is a day old) are deleted on the next run into that folder.
"""
from __future__ import annotations

import os
import re
import tempfile
import time

from ..errors import SonicInputError

SUFFIXES = (".mp4", ".mov", ".m4v")
_PREFIX = ".sonic-"
_SUFFIX = ".partial.mp4"
_PARTIAL = re.compile(r"^\.sonic-(\d+)-.*\.partial\.mp4$")
STALE_AGE_S = 24 * 3600


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output(out, inputs=()) -> str:
    """The path the video will be written to; a `SonicInputError` naming the fix if it cannot be."""
    path = os.fspath(out)
    if not path.strip():
        raise SonicInputError("The output path is empty; give a file name ending in .mp4.")
    if os.path.isdir(path):
        raise SonicInputError(f"Output '{path}' is a folder; give a file name inside it, e.g. {os.path.join(path, 'talk.mp4')}.")
    root, ext = os.path.splitext(path)
    if not ext:
        path += ".mp4"
    elif ext.lower() not in SUFFIXES:
        raise SonicInputError(f"Output '{path}' would get MP4 content under a '{ext}' name; name it "
                              f"{os.path.basename(root)}.mp4 (or .mov / .m4v).")
    if os.path.isdir(path):
        raise SonicInputError(f"Output '{path}' is a folder; give a file name inside it, e.g. {os.path.join(path, 'talk.mp4')}.")
    for source in inputs:
        if isinstance(source, (str, os.PathLike)) and os.path.exists(path) and _same_file(path, os.fspath(source)):
            raise SonicInputError(f"Output '{path}' is the input '{os.fspath(source)}'; writing the video there would "
                                  "destroy it. Choose another output name.")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise SonicInputError(f"Output '{path}' exists and is not a regular file; choose another name.")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f"{_PREFIX}{os.getpid()}-", suffix=".probe", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise SonicInputError(f"Cannot write the video into '{folder}': {e.strerror or e}. Choose a folder you can "
                              "write to.") from None
    return path


def _umask() -> int:
    """The process's umask, read without changing it (os.umask sets it, racing other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


class PartialFile:
    """A new hidden file beside `path` that the video is written to, then renamed onto `path`."""

    def __init__(self, path: str):
        self.path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        sweep_stale_partials(folder)
        name = os.path.basename(self.path)
        self.fd, self.tmp_path = tempfile.mkstemp(prefix=f"{_PREFIX}{os.getpid()}-", suffix=f"-{name}{_SUFFIX}",
                                                  dir=folder)
        # mkstemp makes it owner-only; the video gets the permissions any new file would (umask).
        if hasattr(os, "fchmod"):
            os.fchmod(self.fd, 0o666 & ~_umask())

    @property
    def open_name(self) -> str:
        """The name FFmpeg opens: this very file through its descriptor where the system has
        /proc (nothing in the folder can redirect it), else its path."""
        fd_path = f"/proc/self/fd/{self.fd}"
        return fd_path if os.path.exists(fd_path) else self.tmp_path

    def commit(self) -> None:
        self._close_fd()
        os.replace(self.tmp_path, self.path)

    def discard(self) -> None:
        self._close_fd()
        try:
            os.remove(self.tmp_path)
        except FileNotFoundError:
            pass

    def _close_fd(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but not ours to signal
        return True
    return True


def sweep_stale_partials(folder: str, max_age_s: float = STALE_AGE_S) -> list[str]:
    """Delete this program's partial files in `folder` whose writer is gone (or a day old); returns them."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        m = _PARTIAL.match(name)
        if not m:
            continue
        full = os.path.join(folder, name)
        try:
            st = os.lstat(full)
        except OSError:
            continue
        if not (st.st_mode & 0o170000 == 0o100000):  # regular files only
            continue
        if not _alive(int(m.group(1))) or now - st.st_mtime > max_age_s:
            try:
                os.remove(full)
                removed.append(full)
            except OSError:
                pass
    return removed
