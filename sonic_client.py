"""Small client for a running ComfyUI: run the shipped Sonic API workflows from Python (stdlib only).

    from sonic_client import load_workflow, set_node_input, run_workflow, save_video

    wf = load_workflow("workflows/sonic_fast_audio_image_api.json")
    set_node_input(wf, "image_loader", image="face.jpg")        # local files are uploaded at run time
    set_node_input(wf, "audio_loader", audio="speech.m4a")
    set_node_input(wf, "config_node", min_resolution=1024, seed=7)
    set_node_input(wf, "postprocess_node", alignment_offset=0.03)
    result = run_workflow(wf, server="http://127.0.0.1:8188", timeout=3600)
    save_video(result, "talk.mp4")

Command line: python sonic_client.py WORKFLOW_API.json --set config_node.min_resolution=1024 \
    --set image_loader.image=face.jpg --set audio_loader.audio=speech.wav --out talk.mp4

Nodes are found by their title (`_meta.title`: image_loader, audio_loader, predata_node, config_node,
postprocess_node, save_node, ...) or by node id. Progress follows the websocket when the
`websocket-client` package is installed, else /history is polled. Node errors (validation from
POST /prompt, or an exception while running) raise SonicClientError with ComfyUI's message.
"""
from __future__ import annotations

import json
import mimetypes
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

DEFAULT_SERVER = "http://127.0.0.1:8188"
UPLOAD_INPUTS = {("LoadImage", "image"), ("LoadAudio", "audio"), ("LoadImageMask", "image"),
                 ("LoadVideo", "file")}


class SonicClientError(RuntimeError):
    """The server rejected the workflow or a node failed; the message is ComfyUI's."""


def load_workflow(path) -> dict:
    """Read an API-format workflow (the *_api.json files); UI-format files are refused with a hint."""
    with open(path, encoding="utf-8") as fh:
        wf = json.load(fh)
    if "nodes" in wf and "links" in wf:
        raise SonicClientError(f"{path} is a UI-format workflow; use its *_api.json twin (or export with "
                               "'Export (API)' in ComfyUI).")
    return wf


def find_node(wf: dict, name: str) -> str:
    if name in wf:
        return name
    hits = [nid for nid, n in wf.items() if n.get("_meta", {}).get("title") == name]
    if not hits:
        titles = sorted(n.get("_meta", {}).get("title", nid) for nid, n in wf.items())
        raise KeyError(f"No node titled {name!r}; the workflow has: {', '.join(titles)}")
    if len(hits) > 1:
        raise KeyError(f"Several nodes are titled {name!r} ({', '.join(hits)}); use a node id.")
    return hits[0]


def set_node_input(wf: dict, name: str, **inputs) -> dict:
    """Set widget values of the node titled `name` (or with id `name`). Returns the workflow.

    For loader nodes (LoadImage.image, LoadAudio.audio) a path to an existing local file is
    uploaded to the server's input folder by run_workflow and replaced by the uploaded name.
    """
    node = wf[find_node(wf, name)]
    for key, value in inputs.items():
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        node["inputs"][key] = value
    return wf


def _url(server: str, path: str, **query) -> str:
    q = ("?" + urllib.parse.urlencode(query)) if query else ""
    return server.rstrip("/") + path + q


def _request(server, path, data=None, headers=None, timeout=60, **query):
    req = urllib.request.Request(_url(server, path, **query), data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as e:
        body = e.read().decode("utf-8", "replace")
        raise SonicClientError(_format_prompt_error(body) or f"HTTP {e.code} from {path}: {body[:500]}") from None
    except urllib.error.URLError as e:
        raise SonicClientError(f"Cannot reach ComfyUI at {server} ({e.reason}); is it running?") from None


def _format_prompt_error(body: str) -> str | None:
    try:
        err = json.loads(body)
    except ValueError:
        return None
    if not isinstance(err, dict) or "error" not in err:
        return None
    parts = []
    e = err.get("error") or {}
    if isinstance(e, dict):
        parts.append(f"{e.get('message', '')} {e.get('details', '')}".strip())
    for nid, ne in (err.get("node_errors") or {}).items():
        for item in ne.get("errors", []):
            parts.append(f"node {nid} ({ne.get('class_type')}): {item.get('message')}: {item.get('details')}")
    return "; ".join(p for p in parts if p)


def upload_file(path, server: str = DEFAULT_SERVER, subfolder: str = "") -> str:
    """Upload a local file to ComfyUI's input folder (/upload/image takes images and audio); returns its name."""
    boundary = uuid.uuid4().hex
    name = os.path.basename(path)
    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    with open(path, "rb") as fh:
        payload = fh.read()
    fields = [("overwrite", "true"), ("type", "input"), ("subfolder", subfolder)]
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
                    for k, v in fields)
    body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
             f"Content-Type: {ctype}\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    reply = json.loads(_request(server, "/upload/image", body,
                                {"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=300))
    return f"{reply['subfolder']}/{reply['name']}" if reply.get("subfolder") else reply["name"]


def upload_local_inputs(wf: dict, server: str = DEFAULT_SERVER) -> dict:
    for node in wf.values():
        for key, value in list(node.get("inputs", {}).items()):
            if (node.get("class_type"), key) in UPLOAD_INPUTS and isinstance(value, str) and os.path.isfile(value):
                node["inputs"][key] = upload_file(value, server)
    return wf


def _history_error(entry: dict) -> str | None:
    status = entry.get("status") or {}
    if status.get("status_str") != "error":
        return None
    for kind, data in status.get("messages", []):
        if kind == "execution_error":
            return (f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                    f"{data.get('exception_type', '')}: {data.get('exception_message', '').strip()}")
        if kind == "execution_interrupted":
            return "the prompt was interrupted"
    return "the prompt failed"


def run_workflow(wf: dict, server: str = DEFAULT_SERVER, timeout: float = 3600.0, progress=None) -> dict:
    """Submit the workflow, wait until it finishes and return {"prompt_id", "outputs", "server", "status"}.

    `progress(event, data)` is called with websocket events ("progress", "executing", ...) when
    websocket-client is installed. Raises SonicClientError with ComfyUI's message on any node error.
    """
    upload_local_inputs(wf, server)
    client_id = uuid.uuid4().hex
    ws = _open_ws(server, client_id)
    try:
        reply = json.loads(_request(server, "/prompt", json.dumps({"prompt": wf, "client_id": client_id}).encode(),
                                    {"Content-Type": "application/json"}))
        if reply.get("node_errors"):
            raise SonicClientError(_format_prompt_error(json.dumps({"error": {}, **reply})) or str(reply))
        prompt_id = reply["prompt_id"]
        deadline = time.monotonic() + timeout
        if ws is not None:
            _follow_ws(ws, prompt_id, deadline, progress)
        while True:
            hist = json.loads(_request(server, f"/history/{prompt_id}"))
            entry = hist.get(prompt_id)
            if entry is not None and (entry.get("status") or {}).get("completed") is not None:
                err = _history_error(entry)
                if err:
                    raise SonicClientError(err)
                if entry["status"].get("completed"):
                    return {"prompt_id": prompt_id, "outputs": entry.get("outputs", {}), "server": server,
                            "status": entry["status"]}
            if time.monotonic() > deadline:
                raise SonicClientError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")
            time.sleep(0.5)
    finally:
        if ws is not None:
            ws.close()


def _open_ws(server: str, client_id: str):
    try:
        import websocket  # websocket-client, optional
    except ImportError:
        return None
    url = _url(server.replace("http://", "ws://").replace("https://", "wss://"), "/ws", clientId=client_id)
    try:
        return websocket.create_connection(url, timeout=10)
    except Exception:
        return None


def _follow_ws(ws, prompt_id: str, deadline: float, progress) -> None:
    """Read events until this prompt finishes or fails (then /history gives the outputs)."""
    import websocket

    while time.monotonic() < deadline:
        try:
            raw = ws.recv()
        except websocket.WebSocketTimeoutException:
            continue
        except Exception:
            return  # connection lost: fall back to polling
        if not isinstance(raw, str):
            continue  # binary preview frames
        msg = json.loads(raw)
        kind, data = msg.get("type"), msg.get("data") or {}
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        if progress is not None:
            progress(kind, data)
        if kind in ("execution_success", "execution_error", "execution_interrupted"):
            return
        if kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
            return


def output_files(result: dict) -> list[dict]:
    """Every file a node reported in its UI output (images, videos, audio), in node order."""
    files = []
    for nid in sorted(result["outputs"], key=lambda k: (len(k), k)):
        for key in ("images", "videos", "gifs", "audio"):
            for item in result["outputs"][nid].get(key, []) or []:
                if isinstance(item, dict) and "filename" in item:
                    files.append({**item, "node": nid})
    return files


def save_video(result: dict, path, server: str | None = None) -> str:
    """Download the (last) video the workflow saved (SaveVideo or Sonic Save MP4) to `path`."""
    vids = [f for f in output_files(result) if f["filename"].lower().endswith((".mp4", ".webm", ".mov", ".mkv"))]
    if not vids:
        raise SonicClientError("The workflow saved no video; does it end in Save Video or Sonic Save MP4?")
    f = vids[-1]
    data = _request(server or result["server"], "/view", timeout=600, filename=f["filename"],
                    subfolder=f.get("subfolder", ""), type=f.get("type", "output"))
    with open(path, "wb") as fh:
        fh.write(data)
    return os.fspath(path)


def _parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workflow", help="an API-format workflow, e.g. workflows/sonic_fast_audio_image_api.json")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                    help="e.g. config_node.min_resolution=1024 or image_loader.image=face.jpg")
    ap.add_argument("--server", default=DEFAULT_SERVER)
    ap.add_argument("--out", default="sonic.mp4")
    ap.add_argument("--timeout", type=float, default=3600)
    a = ap.parse_args(argv)
    wf = load_workflow(a.workflow)
    for item in a.set:
        target, _, value = item.partition("=")
        name, _, key = target.rpartition(".")
        set_node_input(wf, name, **{key: _parse_value(value)})

    def show(kind, data):
        if kind == "progress":
            print(f"\r{data.get('node')}: {data.get('value')}/{data.get('max')}", end="", file=sys.stderr)

    try:
        result = run_workflow(wf, a.server, a.timeout, show)
        print(file=sys.stderr)
        print(save_video(result, a.out))
    except SonicClientError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
