"""The HTTP API (FastAPI): submit jobs, follow them, fetch results, from anywhere.

Bearer-token auth: every token is a tenant; a job is visible only to the token that made it
(its record holds a digest of the token; another token gets 404, as for a job that does not
exist). Inputs are uploaded with the request (multipart) or named by key under the tenant's
own `uploads/<tenant>/` prefix; the API never fetches a URL. A user error is a 422 with the
engine's message; an upload over the limit is a 413.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import shutil
import tempfile
import time

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from ..errors import SonicInputError
from . import MAX_UPLOAD_MB, TTL_DAYS
from .client import Client
from .jobs import FINAL
from .storage import StoreUnavailable

SSE_KEEPALIVE_S = 15.0  # a comment line this often keeps proxies and clients from timing out
SSE_MAX_S = 3600.0  # a stream ends after this long; the client reconnects



class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is refused with 413 as it arrives, with or
    without a Content-Length (chunked uploads are counted, not spooled to disk first)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        seen, started = 0, False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send):
        body = json.dumps({"detail": f"upload larger than {self.limit / 1e6:g} MB"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def tenant_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:24]


def load_tokens(spec: str | None) -> list[str]:
    """Tokens from a file (one per line) or a comma-separated list ($SONIC_API_TOKENS)."""
    spec = spec if spec is not None else os.environ.get("SONIC_API_TOKENS", "")
    if spec and os.path.isfile(spec):
        with open(spec) as f:
            items = [line.strip() for line in f]
    else:
        items = [t.strip() for t in spec.split(",")]
    tokens = [t for t in items if t and not t.startswith("#")]
    if not tokens:
        raise SonicInputError("The API needs at least one token: --tokens FILE (one per line) or $SONIC_API_TOKENS.")
    if any("change-me" in t for t in tokens):
        raise SonicInputError("Replace the placeholder API token (change-me...) with your own.")
    if any(len(t) < 16 for t in tokens):
        raise SonicInputError("API tokens must be at least 16 characters (e.g. python -c 'import secrets; "
                              "print(secrets.token_urlsafe(32))').")
    return tokens


def create_app(client: Client, tokens: list[str], max_upload_mb: float = MAX_UPLOAD_MB):
    app = FastAPI(title="Sonic job service", version="1", description=__doc__)
    app.add_middleware(BodyLimit, limit=int(max_upload_mb * 1e6))
    bearer = HTTPBearer(auto_error=False)
    tenants = {tenant_of(t): t for t in tokens}

    def tenant(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
        if cred is None or cred.scheme.lower() != "bearer":
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        t = tenant_of(cred.credentials)
        if t not in tenants or not hmac.compare_digest(tenants[t], cred.credentials):
            raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
        return t

    @app.exception_handler(SonicInputError)
    def user_error(request, exc: SonicInputError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(StoreUnavailable)
    def store_down(request, exc: StoreUnavailable):
        return JSONResponse({"detail": f"storage unavailable, try again: {exc}"}, status_code=503)

    def own_job(job_id: str, who: str):
        job = client.get(job_id) if job_id.isalnum() and len(job_id) <= 64 else None
        if job is None or not hmac.compare_digest(job.owner, who):
            raise HTTPException(404, "no such job")
        return job

    def view(job, request: Request | None = None) -> dict:
        d = job.public()
        d.pop("worker", None)  # another tenant's infrastructure is none of theirs
        done = job.state == "done"
        # Through the API (authenticated, works wherever the API does), and presigned straight from
        # the store (faster, where clients can reach the store's endpoint).
        base = str(request.base_url).rstrip("/") if request is not None else ""
        d["result_url"] = f"{base}/v1/jobs/{job.id}/result" if done else None
        d["download_url"] = client.store.url(job.result_key) if done else None
        return d

    @app.post("/v1/jobs", status_code=201, summary="Submit a job: multipart image + audio (or keys under "
              "uploads/<tenant>/), settings as JSON (the CLI's names), priority interactive|batch.")
    async def submit(request: Request, who: str = Depends(tenant)):
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise HTTPException(415, "send multipart/form-data with fields image, audio (files), settings, priority")
        tmp = tempfile.mkdtemp(prefix="sonic-upload-")
        try:
            async with request.form(max_files=2, max_fields=8, max_part_size=64 * 1024) as form:
                raw = form.get("settings") or "{}"
                if not isinstance(raw, str):
                    raise SonicInputError("settings must be a form field with JSON, not a file.")
                settings = json.loads(raw)
                if not isinstance(settings, dict):
                    raise SonicInputError("settings must be a JSON object, e.g. {\"min_resolution\": 1024}.")
                priority = str(form.get("priority") or "batch")
                paths = {}
                for name in ("image", "audio"):
                    part = form.get(name)
                    key = form.get(f"{name}_key")
                    if part is not None and hasattr(part, "read"):
                        suffix = os.path.splitext(part.filename or "")[1][:6]
                        path = os.path.join(tmp, name + (suffix if suffix[1:].isalnum() else ""))
                        with open(path, "wb") as f:
                            while chunk := await part.read(1 << 20):
                                f.write(chunk)
                        if os.path.getsize(path) == 0:
                            raise SonicInputError(f"The {name} upload is empty.")
                        paths[name] = path
                    elif isinstance(key, str) and key:
                        if not key.startswith(f"uploads/{who}/") or ".." in key:
                            raise HTTPException(403, f"{name}_key must be under uploads/{who}/")
                        paths[name] = key
                    else:
                        raise SonicInputError(f"Missing the {name}: a file field '{name}' or a key '{name}_key'.")
            uploaded = not os.path.isabs(paths["image"])
            if uploaded != (not os.path.isabs(paths["audio"])):
                raise SonicInputError("Give both inputs as files or both as keys.")
            # Storage and Redis calls block: off the event loop, so other requests go on meanwhile.
            job = await run_in_threadpool(client.submit_keys, None, paths["image"], paths["audio"], settings,
                                          priority, who, uploaded)
        except json.JSONDecodeError as e:
            raise SonicInputError(f"settings is not valid JSON: {e}.") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return view(job, request)

    @app.get("/v1/jobs/{job_id}", summary="State, progress, error message and result URLs of a job.")
    def status(job_id: str, request: Request, who: str = Depends(tenant)):
        return view(own_job(job_id, who), request)

    @app.get("/v1/jobs/{job_id}/result", summary="The finished job's MP4.")
    def result(job_id: str, who: str = Depends(tenant)):
        job = own_job(job_id, who)
        if job.state != "done":
            raise HTTPException(409, f"job is {job.state}, not done")
        tmp = tempfile.mkdtemp(prefix="sonic-result-")
        path = os.path.join(tmp, f"{job_id}.mp4")
        try:
            client.store.get_file(job.result_key, path)
        except KeyError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise HTTPException(410, "the result has expired or was deleted") from None
        return FileResponse(path, media_type="video/mp4", filename=f"{job_id}.mp4",
                            background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))

    @app.get("/v1/jobs/{job_id}/events", summary="Server-sent events: the job's state and progress as they change.")
    async def events(job_id: str, request: Request, who: str = Depends(tenant)):
        await run_in_threadpool(own_job, job_id, who)

        async def stream():
            seen, t0, last_sent = None, time.monotonic(), time.monotonic()
            while time.monotonic() - t0 < SSE_MAX_S:
                job = await run_in_threadpool(client.get, job_id)
                if job is None:
                    return
                now = (job.state, job.frames_done, job.error)
                if now != seen:
                    seen, last_sent = now, time.monotonic()
                    yield f"event: {job.state}\ndata: {json.dumps(view(job, request))}\n\n"
                elif time.monotonic() - last_sent > SSE_KEEPALIVE_S:
                    last_sent = time.monotonic()
                    yield ": keepalive\n\n"
                if job.state in FINAL:
                    return
                await asyncio.sleep(0.25)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.delete("/v1/jobs/{job_id}", summary="Cancel a queued or running job; a finished job's result is deleted.")
    def delete(job_id: str, request: Request, who: str = Depends(tenant)):
        job = own_job(job_id, who)
        if job.state in FINAL:
            if client.book.transition(job_id, ("done", "failed", "cancelled"), state="deleted"):
                client.store.delete(job.result_key)
        else:
            client.cancel(job_id)
        return view(client.get(job_id), request)

    @app.get("/healthz", summary="200 when Redis and the store answer.")
    def healthz():
        try:
            client.book.r.ping()
            client.store.exists("healthz")
        except Exception as e:  # noqa: BLE001 - any failure is unhealthy
            return JSONResponse({"ok": False, "error": f"{type(e).__name__}: {e}"}, status_code=503)
        return {"ok": True}

    return app


def start_expiry(client: Client, ttl_days: float, every_s: float = 3600.0):
    """A daemon thread deleting inputs and results older than `ttl_days`, now and every `every_s`
    (job records expire in Redis on their own). Servers without lifecycle rules need this; on AWS
    a bucket lifecycle rule can do it instead (then pass ttl_days 0 to turn this off)."""
    import logging
    import threading

    log = logging.getLogger("sonic_core.service")
    stop = threading.Event()

    def sweep():
        while True:
            try:
                n = sum(client.store.expire(prefix, ttl_days * 86400.0) for prefix in ("jobs/", "results/", "uploads/"))
                if n:
                    log.info("expired %d objects older than %g days", n, ttl_days)
            except Exception as e:  # noqa: BLE001 - the store may be down for a while; try again later
                log.warning("expiry sweep failed: %s", e)
            if stop.wait(every_s):
                return

    if ttl_days > 0:
        threading.Thread(target=sweep, name="sonic-expiry", daemon=True).start()
    return stop


def serve(queue: str, store: str, tokens: str | None, host: str = "127.0.0.1", port: int = 8000,
          max_upload_mb: float = MAX_UPLOAD_MB, ttl_days: float = TTL_DAYS) -> None:
    import uvicorn

    client = Client(queue, store)
    app = create_app(client, load_tokens(tokens), max_upload_mb)
    start_expiry(client, ttl_days)
    uvicorn.run(app, host=host, port=port, log_level="info")
