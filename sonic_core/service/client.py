"""Submitting jobs and following them: what the HTTP API and `batch` are built on."""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import SonicInputError, check_input_file
from .jobs import FINAL, PRIORITIES, Job, JobBook, new_job_id, validate_settings
from .storage import Store, open_store
from .tasks import enqueue, make_app


class Client:
    """Jobs on the queue at `queue` (redis://...) with inputs and results in `store`."""

    def __init__(self, queue: str, store: str | Store):
        self.app = make_app(queue)
        self.book = JobBook(queue)
        self.store = open_store(store) if isinstance(store, str) else store

    def submit(self, image: str | os.PathLike, audio: str | os.PathLike, settings: dict | None = None,
               priority: str = "batch", owner: str = "") -> Job:
        """Upload the two files and queue a job (settings are checked now: a bad one is a SonicInputError)."""
        check_input_file(os.fspath(image), "Image", "an image file", "photo")
        check_input_file(os.fspath(audio), "Audio", "an audio file", "recording")
        return self.submit_keys(None, image, audio, settings, priority, owner)

    def submit_keys(self, job_id: str | None, image, audio, settings: dict | None, priority: str, owner: str,
                    uploaded: bool = False) -> Job:
        """Queue a job whose inputs are local files (uploaded here) or, with `uploaded`, keys already
        in the store."""
        if priority not in PRIORITIES:
            raise SonicInputError(f"Priority must be one of {', '.join(PRIORITIES)} (got {priority!r}).")
        settings = validate_settings(dict(settings or {}))
        job_id = job_id or new_job_id()
        if uploaded:
            image_key, audio_key = str(image), str(audio)
            for key in (image_key, audio_key):
                if not self.store.exists(key):
                    raise SonicInputError(f"Input '{key}' is not in the store.")
        else:
            image_key = f"jobs/{job_id}/image{_suffix(image)}"
            audio_key = f"jobs/{job_id}/audio{_suffix(audio)}"
            self.store.put_file(image_key, image)
            self.store.put_file(audio_key, audio)
        job = self.book.create(Job(id=job_id, owner=owner, image_key=image_key, audio_key=audio_key,
                                   settings=settings, priority=priority))
        enqueue(self.app, job_id, priority)
        return job

    def get(self, job_id: str) -> Job | None:
        return self.book.get(job_id)

    def cancel(self, job_id: str) -> None:
        self.book.request_cancel(job_id)

    def wait(self, job_id: str, timeout: float = 3600.0, poll: float = 0.25, on_progress=None, check=None) -> Job:
        """Block until the job is done, failed or cancelled; `on_progress(job)` on every change;
        `check()` on every poll (it raises to stop waiting, e.g. when a worker it relies on died)."""
        t_end, seen = time.monotonic() + timeout, None
        while True:
            if check is not None:
                check()
            job = self.book.get(job_id)
            if job is None:
                raise KeyError(job_id)
            state = (job.state, job.frames_done)
            if on_progress is not None and state != seen:
                on_progress(job)
                seen = state
            if job.state in FINAL:
                return job
            if time.monotonic() > t_end:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout:.0f} s")
            time.sleep(poll)

    def download(self, job_id: str, path: str | os.PathLike) -> Path:
        job = self.book.get(job_id)
        if job is None or job.state != "done":
            raise SonicInputError(f"Job {job_id} has no result (state: {job.state if job else 'unknown'}).")
        path = Path(path)
        tmp = path.with_name(f".{path.name}.download")
        self.store.get_file(job.result_key, tmp)
        os.replace(tmp, path)
        return path


def _suffix(path) -> str:
    s = Path(path).suffix.lower()
    return s if s and len(s) <= 6 and s[1:].isalnum() else ""
