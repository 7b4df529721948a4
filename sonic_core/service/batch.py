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
    try:
        while pending:
            for job_id in sorted(pending):
                item = jobs[job_id]
                try:
                    view = api.get(job_id)
                except (ApiError, OSError) as e:  # the API restarting, a network blip: ask again next round
                    if isinstance(e, ApiError) and e.status in (401, 403, 404):
                        item["view"] = {"state": "failed", "error": str(e)}
                        failed += 1
                        pending.discard(job_id)
                    continue
                item["view"] = view
                if view["state"] == "done":
                    name = item["out"] or f"{Path(item['image']).stem}_{Path(item['audio']).stem}_{job_id[:8]}.mp4"
                    try:
                        item["path"] = str(api.download(view["result_url"], out_dir / name))
                    except (ApiError, OSError, ValueError) as e:
                        print(f"{job_id}: download failed ({e}); will retry", file=sys.stderr)
                        continue
                    pending.discard(job_id)
                elif view["state"] in ("failed", "cancelled", "deleted"):
                    failed += 1
                    print(f"{job_id} ({item['image'].name}, {item['audio'].name}): {view['state']}: {view['error']}",
                          file=sys.stderr)
                    pending.discard(job_id)
            if progress is not None:
                views = [it.get("view") or {} for it in jobs.values()]
                frames_done = sum(v.get("frames_done", 0) for v in views)
                frames_total = sum(max(v.get("frames_total", 0), v.get("frames_done", 0)) for v in views)
                progress(len(jobs) - len(pending), len(jobs), frames_done, frames_total)
            if pending:
                time.sleep(poll_s)
    finally:  # also when interrupted: what finished so far is listed
        with open(out_dir / "batch_results.jsonl", "w") as f:
            for item in items:
                v = item.get("view", {})
                job_id = next((k for k, it in jobs.items() if it is item), None)
                f.write(json.dumps({"id": job_id, "image": str(item["image"]), "audio": str(item["audio"]),
                                    "state": v.get("state", "refused" if "error" in item else None),
                                    "error": v.get("error", item.get("error", "")), "out": item.get("path")}) + "\n")
    return failed
