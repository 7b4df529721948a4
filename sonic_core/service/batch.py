"""`python -m sonic_core batch`: a manifest of clips through the HTTP API, results downloaded.

The manifest is CSV (a header row) or JSONL (one object per line) with `image` and `audio`
(paths, relative to the manifest's folder), optionally `out` (where the MP4 goes, relative to
--out-dir) and any generate setting as a further column (`min_resolution`, `seed`, ...).
"""
from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

from ..errors import SonicInputError
from .http import ApiClient, ApiError


def read_manifest(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise SonicInputError(f"Manifest not found: '{path}'.")
    text = path.read_text()
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise SonicInputError(f"{path}:{n}: not a JSON object ({e}).") from None
    else:
        rows = [dict(r) for r in csv.DictReader(text.splitlines())]
    out = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not row.get("image") or not row.get("audio"):
            raise SonicInputError(f"{path}: row {n} needs 'image' and 'audio'.")
        item = {"image": path.parent / str(row.pop("image")), "audio": path.parent / str(row.pop("audio")),
                "out": row.pop("out", None) or None, "settings": {}}
        for k, v in row.items():
            if v in (None, ""):
                continue
            try:
                item["settings"][k] = json.loads(v) if isinstance(v, str) else v
            except ValueError:
                item["settings"][k] = v
        for key in ("image", "audio"):
            if not item[key].is_file():
                raise SonicInputError(f"{path}: row {n}: {key} file not found: '{item[key]}'.")
        out.append(item)
    if not out:
        raise SonicInputError(f"Manifest '{path}' lists no clips.")
    return out


def run_batch(api: ApiClient, manifest: str | Path, out_dir: str | Path, priority: str = "batch",
              poll_s: float = 0.5, progress=None) -> int:
    """Submit every row, follow them, download each result as it finishes. Returns the number failed."""
    items = read_manifest(manifest)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = {}
    for i, item in enumerate(items):
        try:
            jobs[api.submit(item["image"], item["audio"], item["settings"], priority)["id"]] = item
        except ApiError as e:
            item["error"] = e.detail
            print(f"row {i + 1} ({item['image'].name}, {item['audio'].name}): refused: {e.detail}", file=sys.stderr)
    pending, failed = set(jobs), sum("error" in it for it in items)
    while pending:
        frames_done = frames_total = 0
        for job_id in sorted(pending):
            view = api.get(job_id)
            item = jobs[job_id]
            item["view"] = view
            if view["state"] == "done":
                name = item["out"] or f"{Path(item['image']).stem}_{Path(item['audio']).stem}_{job_id[:8]}.mp4"
                item["path"] = str(api.download(view["result_url"], out_dir / name))
                pending.discard(job_id)
            elif view["state"] in ("failed", "cancelled"):
                failed += 1
                print(f"{job_id} ({item['image'].name}, {item['audio'].name}): {view['state']}: {view['error']}",
                      file=sys.stderr)
                pending.discard(job_id)
        for item in jobs.values():
            v = item.get("view") or {}
            frames_done += v.get("frames_done", 0)
            frames_total += max(v.get("frames_total", 0), v.get("frames_done", 0))
        if progress is not None:
            progress(len(jobs) - len(pending), len(jobs), frames_done, frames_total)
        if pending:
            time.sleep(poll_s)
    with open(out_dir / "batch_results.jsonl", "w") as f:
        for job_id, item in jobs.items():
            v = item.get("view", {})
            f.write(json.dumps({"id": job_id, "image": str(item["image"]), "audio": str(item["audio"]),
                                "state": v.get("state"), "error": v.get("error", ""), "out": item.get("path")}) + "\n")
    return failed
