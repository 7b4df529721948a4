"""Where a job's inputs and result live: S3-compatible object storage, or a local folder.

Keys are per job (`jobs/<id>/image.jpg`, `jobs/<id>/audio.wav`, `results/<id>.mp4`), so a job id
maps to exactly one result object. Both stores make an object visible only once it is whole:
an S3 PUT (single or multipart) appears atomically on completion, and the folder store writes
a hidden temporary file and renames it. A retried or duplicated job therefore never leaves a
partial or a second result, only the same key written again.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, urlparse

from ..errors import SonicInputError


class Store(Protocol):
    def put_file(self, key: str, path: str | os.PathLike) -> None: ...
    def get_file(self, key: str, path: str | os.PathLike) -> None: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def keys(self, prefix: str = "") -> list[str]: ...
    def url(self, key: str, expires_s: int = 3600) -> str: ...
    def expire(self, prefix: str, older_than_s: float) -> int: ...


class StoreUnavailable(RuntimeError):
    """The store could not be reached (transient: the job is retried)."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad object key {key!r}")
    return key


class LocalStore:
    """Objects as files under `root` (one machine; the same keys as S3)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_file(self, key: str, path) -> None:
        dst = self._path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".put-", dir=dst.parent)
        try:
            with os.fdopen(fd, "wb") as f, open(path, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_file(self, key: str, path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise KeyError(key)
        shutil.copyfile(src, path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self, prefix: str = "") -> list[str]:
        out = []
        for p in self.root.rglob("*"):
            if p.is_file() and not p.name.startswith(".put-"):
                k = p.relative_to(self.root).as_posix()
                if k.startswith(prefix):
                    out.append(k)
        return sorted(out)

    def url(self, key: str, expires_s: int = 3600) -> str:
        return self._path(key).as_uri()

    def expire(self, prefix: str, older_than_s: float) -> int:
        cutoff, n = time.time() - older_than_s, 0
        for k in self.keys(prefix):
            p = self._path(k)
            if p.stat().st_mtime < cutoff:
                p.unlink(missing_ok=True)
                n += 1
        return n


class S3Store:
    """Objects in an S3-compatible bucket (AWS, MinIO, SeaweedFS, ...), through boto3.

    Credentials come from boto3's usual places (environment, profile, instance role); a server
    without authentication (SeaweedFS' default) takes any.
    """

    def __init__(self, bucket: str, endpoint: str | None = None, region: str | None = None, create: bool = True):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        kw = {}
        if not (os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE")) and endpoint:
            kw = {"aws_access_key_id": "sonic", "aws_secret_access_key": "sonic"}  # a local server without auth
        self.s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region or os.environ.get("AWS_REGION", "us-east-1"),
                               config=Config(retries={"max_attempts": 4, "mode": "standard"},
                                             s3={"addressing_style": "path"}), **kw)
        if create:
            self._call(self._ensure_bucket)

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.s3.create_bucket(Bucket=self.bucket)

    def _call(self, fn, *a, **kw):
        from botocore.exceptions import (
            ConnectionClosedError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        try:
            return fn(*a, **kw)
        except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError) as e:
            raise StoreUnavailable(f"object storage unreachable: {e}") from e

    def put_file(self, key: str, path) -> None:
        self._call(self.s3.upload_file, str(path), self.bucket, _check_key(key))

    def get_file(self, key: str, path) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call(self.s3.download_file, self.bucket, _check_key(key), str(path))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise KeyError(key) from None
            raise

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._call(self.s3.head_object, Bucket=self.bucket, Key=_check_key(key))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def delete(self, key: str) -> None:
        self._call(self.s3.delete_object, Bucket=self.bucket, Key=_check_key(key))

    def _objects(self, prefix: str):
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in self._call(list, pages):
            yield from page.get("Contents", [])

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(o["Key"] for o in self._objects(prefix))

    def url(self, key: str, expires_s: int = 3600) -> str:
        return self.s3.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": _check_key(key)},
                                              ExpiresIn=int(expires_s))

    def expire(self, prefix: str, older_than_s: float) -> int:
        """Delete objects under `prefix` older than `older_than_s` (servers without lifecycle rules
        too; on AWS a bucket lifecycle rule can do the same server-side)."""
        cutoff, n = time.time() - older_than_s, 0
        for o in list(self._objects(prefix)):
            if o["LastModified"].timestamp() < cutoff:
                self.delete(o["Key"])
                n += 1
        return n


def open_store(url: str) -> Store:
    """`file:///path` or a plain path: a folder; `s3://bucket?endpoint=http://host:port&region=...`:
    a bucket (endpoint left out: AWS, or $AWS_ENDPOINT_URL)."""
    u = urlparse(url)
    if u.scheme in ("", "file"):
        return LocalStore(u.path if u.scheme else url)
    if u.scheme == "s3":
        if not u.netloc:
            raise SonicInputError(f"Store '{url}' names no bucket: use s3://BUCKET?endpoint=http://host:port.")
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        return S3Store(u.netloc, endpoint=q.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL"), region=q.get("region"))
    raise SonicInputError(f"Store '{url}' is neither a folder (file:///path) nor a bucket (s3://bucket?endpoint=...).")
