"""The job service: the engine on many GPUs and machines (Celery on Redis, S3 storage, HTTP API).

An optional extra (`pip install -r requirements-service.txt`, or `pip install .[service]`): a
ComfyUI install never pulls it. Parts: storage.py (S3 or a folder), jobs.py (job records in
Redis), tasks.py (the Celery task and warm worker), client.py (submit, follow, download), api.py
(the HTTP API), http.py (its client), batch.py (a manifest through the API), local.py (the
servers on one machine: `up`, and the tests).
"""
from __future__ import annotations

SERVICE_MODULES = {"celery": "celery[redis]", "redis": "redis", "boto3": "boto3", "fastapi": "fastapi",
                   "uvicorn": "uvicorn", "multipart": "python-multipart"}


def require_service_deps() -> None:
    """A clear error when the service extra is not installed."""
    import importlib.util

    from ..errors import SonicInputError

    missing = [pkg for mod, pkg in SERVICE_MODULES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise SonicInputError(f"The job service needs {', '.join(missing)}: pip install -r requirements-service.txt "
                              "(or pip install '.[service]').")
