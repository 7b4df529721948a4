"""The HTTP API (FastAPI): submit jobs, follow them, fetch results, from anywhere.

Bearer-token auth: every token is a tenant; a job is visible only to the token that made it
(its record holds a digest of the token; another token gets 404, as for a job that does not
exist). Inputs are uploaded with the request (multipart) or named by key under the tenant's
own `uploads/<tenant>/` prefix; the API never fetches a URL. A user error is a 422 with the
engine's message; an upload over the limit is a 413.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import tempfile
import time

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import SonicInputError
from .client import Client
from .jobs import FINAL

MAX_UPLOAD_MB = 200.0  # per request (image + audio); 15 minutes of 48 kHz stereo WAV is ~170 MB


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
    if any(len(t) < 16 for t in tokens):
        raise SonicInputError("API tokens must be at least 16 characters (e.g. python -c 'import secrets; "
                              "print(secrets.token_urlsafe(32))').")
    return tokens


def create_app(client: Client, tokens: list[str], max_upload_mb: float = MAX_UPLOAD_MB):
    app = FastAPI(title="Sonic job service", version="1", description=__doc__)
    bearer = HTTPBearer(auto_error=False)
    tenants = {tenant_of(t): t for t in tokens}
    limit = int(max_upload_mb * 1e6)

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

    def own_job(job_id: str, who: str):
        job = client.get(job_id) if job_id.isalnum() and len(job_id) <= 64 else None
        if job is None or not hmac.compare_digest(job.owner, who):
            raise HTTPException(404, "no such job")
        return job

    def view(job) -> dict:
        d = job.public()
        d["result_url"] = client.store.url(job.result_key) if job.state == "done" else None
        return d

    @app.post("/v1/jobs", status_code=201, summary="Submit a job: multipart image + audio (or keys under "
              "uploads/<tenant>/), settings as JSON (the CLI's names), priority interactive|batch.")
    async def submit(request: Request, who: str = Depends(tenant)):
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limit:
            raise HTTPException(413, f"upload larger than {max_upload_mb:g} MB")
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise HTTPException(415, "send multipart/form-data with fields image, audio (files), settings, priority")
        tmp = tempfile.mkdtemp(prefix="sonic-upload-")
        try:
            form = await request.form(max_files=2, max_fields=8, max_part_size=limit)
            settings = json.loads(form.get("settings") or "{}")
            if not isinstance(settings, dict):
                raise SonicInputError("settings must be a JSON object, e.g. {\"min_resolution\": 1024}.")
            priority = str(form.get("priority") or "batch")
            paths, total = {}, 0
            for name in ("image", "audio"):
                part = form.get(name)
                key = form.get(f"{name}_key")
                if part is not None and hasattr(part, "read"):
                    suffix = os.path.splitext(part.filename or "")[1][:6]
                    path = os.path.join(tmp, name + (suffix if suffix[1:].isalnum() else ""))
                    with open(path, "wb") as f:
                        while chunk := await part.read(1 << 20):
                            total += len(chunk)
                            if total > limit:
                                raise HTTPException(413, f"upload larger than {max_upload_mb:g} MB")
                            f.write(chunk)
                    paths[name] = path
                elif key:
                    if not str(key).startswith(f"uploads/{who}/") or ".." in str(key):
                        raise HTTPException(403, f"{name}_key must be under uploads/{who}/")
                    paths[name] = str(key)
                else:
                    raise SonicInputError(f"Missing the {name}: a file field '{name}' or a key '{name}_key'.")
            uploaded = not os.path.isabs(paths["image"])
            if uploaded != (not os.path.isabs(paths["audio"])):
                raise SonicInputError("Give both inputs as files or both as keys.")
            for name, path in paths.items():
                if not uploaded and os.path.getsize(path) == 0:
                    raise SonicInputError(f"The {name} upload is empty.")
            job = client.submit_keys(None, paths["image"], paths["audio"], settings, priority, who, uploaded=uploaded)
        except json.JSONDecodeError as e:
            raise SonicInputError(f"settings is not valid JSON: {e}.") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return view(job)

    @app.get("/v1/jobs/{job_id}", summary="State, progress, error message and result URL of a job.")
    def status(job_id: str, who: str = Depends(tenant)):
        return view(own_job(job_id, who))

    @app.get("/v1/jobs/{job_id}/events", summary="Server-sent events: the job's state and progress as they change.")
    def events(job_id: str, who: str = Depends(tenant)):
        own_job(job_id, who)

        def stream():
            seen = None
            while True:
                job = client.get(job_id)
                if job is None:
                    return
                now = (job.state, job.frames_done, job.error)
                if now != seen:
                    seen = now
                    yield f"event: {job.state}\ndata: {json.dumps(view(job))}\n\n"
                if job.state in FINAL:
                    return
                time.sleep(0.25)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.delete("/v1/jobs/{job_id}", summary="Cancel a queued or running job; a finished job's result is deleted.")
    def delete(job_id: str, who: str = Depends(tenant)):
        job = own_job(job_id, who)
        if job.state in FINAL:
            client.store.delete(job.result_key)
        else:
            client.cancel(job_id)
        return view(client.get(job_id))

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
          max_upload_mb: float = MAX_UPLOAD_MB, ttl_days: float = 7.0) -> None:
    import uvicorn

    client = Client(queue, store)
    app = create_app(client, load_tokens(tokens), max_upload_mb)
    start_expiry(client, ttl_days)
    uvicorn.run(app, host=host, port=port, log_level="info")
