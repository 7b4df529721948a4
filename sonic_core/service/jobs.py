"""Job records: what a job is (inputs, settings, owner) and where it stands, kept in Redis.

The queue engine (Celery, see tasks.py) carries only the job id; everything else is one Redis
hash per job, so the API, the workers and `batch` read one truth: state, frames done, the
error a user can act on, the result key. Redis persistence (AOF) keeps records and queued
messages across a restart.
"""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field

from ..config import GenerateConfig
from . import TTL_DAYS

STATES = ("queued", "running", "done", "failed", "cancelled", "deleted")
FINAL = ("done", "failed", "cancelled", "deleted")  # never left once reached
PRIORITIES = {"interactive": 0, "batch": 9}  # Celery on Redis: 0 is served first
RECORD_TTL_S = TTL_DAYS * 86400  # records are kept this long (the API's expiry deletes objects as old)


@dataclass
class Job:
    id: str
    owner: str  # who may see it (a digest of the API token; "" for local use)
    image_key: str
    audio_key: str
    settings: dict = field(default_factory=dict)  # GenerateConfig fields, validated at submit
    priority: str = "batch"
    state: str = "queued"
    frames_done: int = 0
    frames_total: int = 0
    error: str = ""
    attempts: int = 0
    worker: str = ""
    created: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    render_s: float = 0.0  # seconds the engine took (the rest of started..finished is transfers)
    notes: str = ""  # what the engine reported (e.g. a transcript not used, and why), one per line
    cancel: bool = False

    @property
    def result_key(self) -> str:
        return f"results/{self.id}.mp4"

    def config(self) -> GenerateConfig:
        return GenerateConfig(**self.settings).validate()

    def public(self) -> dict:
        """What a client sees (no owner digest)."""
        d = asdict(self)
        d.pop("owner")
        d["result_key"] = self.result_key if self.state == "done" else None
        return d


def new_job_id() -> str:
    return secrets.token_hex(12)


def validate_settings(settings: dict) -> dict:
    """The settings as GenerateConfig accepts them (unknown names and bad values are a SonicInputError)."""
    from ..errors import SonicInputError

    known = set(GenerateConfig.__dataclass_fields__)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise SonicInputError(f"Unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
    if settings.get("speech_model"):
        raise SonicInputError("Setting 'speech_model' (a local checkpoint path) is not accepted by the job service.")
    from ..audio.transcript import MAX_CHARS, looks_like_path

    if len(str(settings.get("transcript") or "")) > MAX_CHARS:
        raise SonicInputError(f"Setting 'transcript' is longer than {MAX_CHARS} characters.")
    if settings.get("transcript") and looks_like_path(settings["transcript"]):
        raise SonicInputError("Setting 'transcript' must be the text itself (or the subtitles' content) in the job "
                              "service, not a file path on the server.")
    return GenerateConfig(**settings).validate().to_dict()


class JobBook:
    """Job records in Redis: `sonic:job:<id>` hashes and a per-owner index."""

    def __init__(self, redis_url: str):
        import redis

        self.r = redis.Redis.from_url(redis_url, decode_responses=True)

    def _key(self, job_id: str) -> str:
        return f"sonic:job:{job_id}"

    def create(self, job: Job) -> Job:
        job.created = job.created or time.time()
        pipe = self.r.pipeline()
        pipe.hset(self._key(job.id), mapping=self._encode(job))
        pipe.expire(self._key(job.id), int(RECORD_TTL_S))
        pipe.zadd(f"sonic:owner:{job.owner}", {job.id: job.created})
        pipe.expire(f"sonic:owner:{job.owner}", int(RECORD_TTL_S))
        pipe.execute()
        return job

    def get(self, job_id: str) -> Job | None:
        raw = self.r.hgetall(self._key(job_id))
        return self._decode(raw) if raw else None

    def update(self, job_id: str, **fields) -> None:
        enc = {k: self._field(v) for k, v in fields.items()}
        self.r.hset(self._key(job_id), mapping=enc)

    def transition(self, job_id: str, allowed: tuple[str, ...], **fields) -> bool:
        """Set `fields` only if the job's state is one of `allowed` (compare-and-set): a finished,
        failed, cancelled or deleted job never goes back, whatever a late or duplicate run does."""
        import redis

        key = self._key(job_id)
        enc = {k: self._field(v) for k, v in fields.items()}
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    if pipe.hget(key, "state") not in allowed:
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.hset(key, mapping=enc)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    # Heartbeats of running jobs: a sorted set, job id -> last beat (epoch seconds).
    def beat(self, job_ids) -> None:
        ids = list(job_ids)
        if ids:
            self.r.zadd("sonic:running", {j: time.time() for j in ids})

    def unbeat(self, job_id: str) -> None:
        self.r.zrem("sonic:running", job_id)

    def last_beat(self, job_id: str) -> float | None:
        return self.r.zscore("sonic:running", job_id)

    def stale(self, older_than_s: float) -> list[str]:
        return list(self.r.zrangebyscore("sonic:running", "-inf", time.time() - older_than_s))

    def incr_attempts(self, job_id: str) -> int:
        return int(self.r.hincrby(self._key(job_id), "attempts", 1))

    def owned(self, owner: str, limit: int = 1000) -> list[str]:
        return list(self.r.zrevrange(f"sonic:owner:{owner}", 0, limit - 1))

    def cancel_requested(self, job_id: str) -> bool:
        return self.r.hget(self._key(job_id), "cancel") == "1"

    def request_cancel(self, job_id: str) -> None:
        """Mark a job cancelled: a queued one never starts, a running one stops at its next check
        (between stages, and at every rendered chunk)."""
        self.update(job_id, cancel=True)
        self.transition(job_id, ("queued",), state="cancelled", finished=time.time())

    @staticmethod
    def _field(v) -> str:
        if isinstance(v, bool):
            return "1" if v else "0"
        if isinstance(v, dict):
            return json.dumps(v)
        return str(v)

    def _encode(self, job: Job) -> dict:
        return {k: self._field(v) for k, v in asdict(job).items()}

    @staticmethod
    def _decode(raw: dict) -> Job:
        types = {f: t for f, t in Job.__annotations__.items()}
        kw = {}
        for k, v in raw.items():
            if k not in types:
                continue
            t = types[k]
            kw[k] = (json.loads(v) if t == "dict" else v == "1" if t == "bool" else int(v) if t == "int"
                     else float(v) if t == "float" else v)
        return Job(**kw)
