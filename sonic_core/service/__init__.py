"""The job service: the engine on many GPUs and machines (Celery on Redis, S3 storage, HTTP API).

An optional extra (`pip install -r requirements-service.txt`, or `pip install .[service]`): a
ComfyUI install never pulls it. Parts: storage.py (S3 or a folder), jobs.py (job records in
Redis), tasks.py (the Celery task and warm worker), client.py (submit, follow, download), api.py
(the HTTP API), http.py (its client), batch.py (a manifest through the API), local.py (the
servers on one machine: `up`, and the tests).
"""
from __future__ import annotations

MAX_UPLOAD_MB = 200.0  # per API request (image + audio); 15 minutes of 48 kHz stereo WAV is ~170 MB
TTL_DAYS = 7.0  # job records expire after this; the API deletes inputs and results as old

QUEUE_MODULES = {"celery": "celery[redis]", "redis": "redis"}
S3_MODULES = {"boto3": "boto3"}
API_MODULES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart"}


def require_service_deps(store: str | None = None, api: bool = False) -> None:
    """A clear error when what this command needs of the service extra is not installed: the queue
    always, boto3 for an s3:// store, the web stack for the API."""
    import importlib.util

    from ..errors import SonicInputError

    need = dict(QUEUE_MODULES)
    if store is None or str(store).startswith("s3:"):
        need.update(S3_MODULES)
    if api:
        need.update(API_MODULES)
    missing = [pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise SonicInputError(f"The job service needs {', '.join(missing)}: pip install -r requirements-service.txt "
                              "(or pip install '.[service]').")
