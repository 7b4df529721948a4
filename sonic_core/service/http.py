"""A small client of the HTTP API (standard library only): what `batch` uses."""
from __future__ import annotations

import json
import mimetypes
import os
import secrets
import urllib.error
import urllib.request
from pathlib import Path


class ApiError(RuntimeError):
    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


class ApiClient:
    def __init__(self, base_url: str, token: str, timeout: float = 120.0):
        self.base, self.token, self.timeout = base_url.rstrip("/"), token, timeout

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        h = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                detail = json.loads(raw).get("detail", raw.decode(errors="replace"))
            except ValueError:
                detail = raw.decode(errors="replace")
            raise ApiError(e.code, str(detail)) from None

    def submit(self, image, audio, settings: dict | None = None, priority: str = "batch") -> dict:
        boundary = "sonic" + secrets.token_hex(12)
        parts = []
        for name, value in (("settings", json.dumps(settings or {})), ("priority", priority)):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        for name, path in (("image", image), ("audio", audio)):
            path = Path(path)
            ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                         f'filename="{path.name}"\r\nContent-Type: {ctype}\r\n\r\n'.encode() + path.read_bytes() + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self._request("POST", "/v1/jobs", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def get(self, job_id: str) -> dict:
        return self._request("GET", f"/v1/jobs/{job_id}")

    def delete(self, job_id: str) -> dict:
        return self._request("DELETE", f"/v1/jobs/{job_id}")

    def events(self, job_id: str):
        """(event, data) pairs from the server-sent event stream until the job ends."""
        req = urllib.request.Request(f"{self.base}/v1/jobs/{job_id}/events",
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=self.timeout) as r:
            event = None
            for raw in r:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    yield event, json.loads(line[6:])

    def download(self, url: str, path: str | os.PathLike) -> Path:
        """Fetch a result to `path`, written whole (temporary name, then rename): the API's own
        `result_url` (sent with the token) or a presigned `download_url` (http(s) only)."""
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {url!r}")
        headers = {"Authorization": f"Bearer {self.token}"} if url.startswith(self.base + "/") else {}
        path = Path(path)
        tmp = path.with_name(f".{path.name}.download")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.timeout) as r, \
                    open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
            os.replace(tmp, path)
        except urllib.error.HTTPError as e:
            raise ApiError(e.code, e.read().decode(errors="replace")) from None
        finally:
            tmp.unlink(missing_ok=True)
        return path
