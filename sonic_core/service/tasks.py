"""The render task on Celery, and the worker that runs it with warm models.

Why Celery on Redis (the README has the longer version): a worker is one process that keeps
torch, the face models and the encoders warm (it can also run K jobs at once in threads, though
more throughput per GPU comes from more worker processes: the CPU-side stages share one
interpreter), with late acknowledgement: a message is removed from Redis
only after its job finished, so a worker killed mid-job (kill -9, a lost node) leaves it
unacknowledged and another worker takes it up once `visibility_timeout` has passed. Retries
with backoff, priorities and task routing are built in, and Redis is the one server it needs.

Delivery is at least once; the result is idempotent: a job id maps to one object key, written
whole (storage.py), and a job that finds its result already there just reports done.
"""
from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ..errors import SonicInputError
from .jobs import FINAL, PRIORITIES, JobBook
from .storage import Store, open_store

log = logging.getLogger("sonic_core.service")

TASK = "sonic.render"
QUEUE = "sonic"
MAX_RETRIES = 3
DEFAULT_VISIBILITY_TIMEOUT_S = 4 * 3600.0  # longer than the longest job (else it would run twice)
PROGRESS_EVERY_S = 0.5
HEARTBEAT_S = 2.0  # a worker marks its running jobs alive this often (from its own thread)
STALE_S = 20.0  # a running job without a beat this long lost its worker: it is queued again
REAP_EVERY_S = 5.0


class Cancelled(Exception):
    """The job was cancelled while it ran."""


def make_app(broker: str, visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT_S):
    """A Celery app on `broker` (redis://...) with the delivery settings the service relies on."""
    from celery import Celery

    app = Celery("sonic", broker=broker)
    app.conf.update(
        task_acks_late=True,  # acknowledged after the job: a dead worker's job is delivered again
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a busy worker does not sit on jobs another could run
        task_ignore_result=True,  # state lives in the job record (jobs.py)
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        broker_transport_options={"visibility_timeout": float(visibility_timeout),
                                  "queue_order_strategy": "priority", "priority_steps": list(range(10))},
    )
    app.task(name=TASK, bind=True, max_retries=MAX_RETRIES, acks_late=True)(_render_task)
    return app


def enqueue(app, job_id: str, priority: str) -> None:
    app.send_task(TASK, args=[job_id], task_id=job_id, queue=QUEUE, priority=PRIORITIES[priority])


@dataclass
class WorkerContext:
    """What a worker process holds across jobs: the store, the job records, warm models per thread."""

    book: JobBook
    store: Store
    device: str | None = None
    models_dir: str | None = None
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    running: set = field(default_factory=set)  # job ids this process is rendering
    _local: threading.local = field(default_factory=threading.local)

    def analyzer(self):
        """This thread's face analyzer, loaded on its first job and kept (one per concurrent job)."""
        a = getattr(self._local, "analyzer", None)
        if a is None:
            from ..face import FaceAnalyzer
            from ..models import ensure_face_models
            from ..pipeline import resolve_device

            ensure_face_models(self.models_dir)
            a = self._local.analyzer = FaceAnalyzer(model_dir=self.models_dir, device=resolve_device(self.device))
        return a


ACTIVE = ("queued", "running")


def recover_lost_jobs(app, book: JobBook, stale_s: float = STALE_S) -> list[str]:
    """Queue again the running jobs whose worker stopped beating (killed, lost node, cut off).

    Faster than the broker's own redelivery, which waits out the visibility timeout (hours, to
    stay above the longest job). The compare-and-set lets one worker win; the old message,
    when Redis restores it later, finds the job done and does nothing.
    """
    requeued = []
    for job_id in book.stale(stale_s):
        job = book.get(job_id)
        if job is not None and book.transition(job_id, ("running",), state="queued",
                                               error="its worker stopped; queued again"):
            enqueue(app, job_id, job.priority)
            requeued.append(job_id)
            log.warning("job %s: its worker (%s) stopped; queued again", job_id, job.worker)
        book.unbeat(job_id)
    return requeued


def _keep_alive(app, ctx: "WorkerContext", stop: threading.Event) -> None:
    """This worker's heartbeat for its running jobs, and the search for jobs other workers lost."""
    last_reap = 0.0
    while not stop.wait(HEARTBEAT_S):
        try:
            ctx.book.beat(ctx.running.copy())
            if time.monotonic() - last_reap > REAP_EVERY_S:
                last_reap = time.monotonic()
                recover_lost_jobs(app, ctx.book)
        except Exception as e:  # noqa: BLE001 - Redis away for a moment: beat again next time
            log.warning("heartbeat: %s", e)


def _render_task(task, job_id: str) -> str:
    ctx: WorkerContext = task.app.sonic
    book = ctx.book
    try:
        return run_job(ctx, job_id)
    except Cancelled:
        book.transition(job_id, ACTIVE, state="cancelled", finished=time.time())
        return "cancelled"
    except SonicInputError as e:  # the user's to fix: no retry
        book.transition(job_id, ACTIVE, state="failed", error=str(e), finished=time.time())
        return "failed"
    except Exception as e:  # noqa: BLE001 - transient (storage, Redis, GPU memory) or unexpected: retried
        retries = task.request.retries
        if retries >= MAX_RETRIES:
            log.exception("job %s failed after %d tries", job_id, retries + 1)
            book.transition(job_id, ACTIVE, state="failed", finished=time.time(),
                            error=f"failed after {retries + 1} tries: {type(e).__name__}: {e}")
            return "failed"
        delay = min(60.0, 2.0 ** retries)
        log.warning("job %s: %s: %s; retry %d in %.0f s", job_id, type(e).__name__, e, retries + 1, delay)
        if not book.transition(job_id, ("running",), state="queued",
                               error=f"retrying after {type(e).__name__}: {e}"):
            return "final"  # finished, cancelled or deleted meanwhile (a duplicate run): nothing to retry
        raise task.retry(exc=e, countdown=delay) from None


def run_job(ctx: WorkerContext, job_id: str) -> str:
    """Render one job: inputs from the store, the MP4 to its one result key, the record kept current.

    Every state change is a compare-and-set (JobBook.transition): a job that is done, failed,
    cancelled or deleted stays so whatever a duplicate delivery does.
    """
    book = ctx.book
    job = book.get(job_id)
    if job is None:
        log.warning("job %s has no record (expired or deleted): dropped", job_id)
        return "missing"
    if job.cancel:
        raise Cancelled()
    if job.state in FINAL:
        return job.state  # delivered again after it ended: nothing to do
    if job.attempts > MAX_RETRIES:  # every earlier try took its worker down (killed, out of memory, ...)
        book.transition(job_id, ACTIVE, state="failed", finished=time.time(),
                        error=f"the worker running it died {job.attempts} times (out of memory? a crash?)")
        return "failed"
    beat = book.last_beat(job_id)
    if job.state == "running" and beat is not None and time.time() - beat < STALE_S:
        return "running elsewhere"  # a redelivered message while its worker is alive
    if not book.transition(job_id, ACTIVE, state="running", worker=ctx.name, started=time.time(), error=""):
        return "final"
    book.incr_attempts(job_id)
    ctx.running.add(job_id)
    book.beat([job_id])
    try:
        return _render(ctx, job)
    finally:
        ctx.running.discard(job_id)
        book.unbeat(job_id)


def _render(ctx: WorkerContext, job) -> str:
    from .. import generate

    book, store, job_id = ctx.book, ctx.store, job.id
    last = [0.0]

    def check_cancel() -> None:
        if book.cancel_requested(job_id):
            raise Cancelled()

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        book.update(job_id, frames_done=done, frames_total=total)
        check_cancel()

    with tempfile.TemporaryDirectory(prefix="sonic-job-") as tmp:
        image = os.path.join(tmp, "image" + PurePosixPath(job.image_key).suffix)
        audio = os.path.join(tmp, "audio" + PurePosixPath(job.audio_key).suffix)
        for key, path in ((job.image_key, image), (job.audio_key, audio)):
            try:
                store.get_file(key, path)
            except KeyError:
                raise SonicInputError(f"The job's input '{key}' is not in the store (deleted or expired); "
                                      "submit the job again.") from None
        check_cancel()
        out = os.path.join(tmp, "result.mp4")
        t_render = time.perf_counter()
        try:
            result = generate(image, audio, out, job.config(), device=ctx.device, model_dir=ctx.models_dir,
                              progress=progress, analyzer=ctx.analyzer())
        except SonicInputError as e:  # name the job's inputs, not this worker's temporary copies
            raise SonicInputError(str(e).replace(image, job.image_key).replace(audio, job.audio_key)) from None
        render_s = time.perf_counter() - t_render
        check_cancel()
        store.put_file(job.result_key, result.path)
    if not book.transition(job_id, ACTIVE, state="done", frames_done=result.frames, frames_total=result.frames,
                           finished=time.time(), render_s=round(render_s, 4), notes="\n".join(result.notes)):
        if book.cancel_requested(job_id) or (book.get(job_id) or job).state == "deleted":
            store.delete(job.result_key)  # cancelled or deleted while it uploaded: leave nothing
        return "final"
    log.info("job %s done: %d frames, %.1f s in the engine", job_id, result.frames, render_s)
    return "done"


def run_worker(queue: str, store: str, jobs: int = 1, device: str | None = None, models_dir: str | None = None,
               visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT_S, name: str | None = None,
               loglevel: str = "INFO") -> None:
    """Serve jobs until stopped (SIGTERM: finish the running jobs, then exit)."""
    app = make_app(queue, visibility_timeout)
    app.sonic = WorkerContext(book=JobBook(queue), store=open_store(store), device=device, models_dir=models_dir)
    if name:
        app.sonic.name = name
    stop = threading.Event()
    threading.Thread(target=_keep_alive, args=(app, app.sonic, stop), name="sonic-heartbeat", daemon=True).start()
    argv = ["worker", "--pool=threads", f"--concurrency={int(jobs)}", f"--queues={QUEUE}", f"--loglevel={loglevel}",
            "--without-gossip", "--without-mingle", f"--hostname={app.sonic.name}@%h"]
    app.worker_main(argv)


__all__ = ["TASK", "make_app", "enqueue", "run_job", "run_worker", "WorkerContext"]
