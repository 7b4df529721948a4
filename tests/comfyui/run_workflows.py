"""Run the shipped Sonic workflows in a real ComfyUI checkout and check the videos.

    python tests/comfyui/run_workflows.py --comfyui /path/to/ComfyUI [--python /path/to/comfy/venv/bin/python]

What it does (loopback only, bounded time, stops the server at the end):
  1. links this repo into ComfyUI/custom_nodes/sonic_comfy if it is not there, starts
     `main.py --cpu --listen 127.0.0.1 --port <free>` with temporary input/output/user folders and an
     extra_model_paths.yaml whose `sonic:` entry points at our model cache (so that path is tested too);
  2. checks our nodes are in /object_info with the expected inputs, category and output types;
  3. uploads assets/grace_hopper.jpg + assets/speech.wav (and a long looped speech file) through
     /upload/image, then checks every UI-format workflow: node types exist, widget values match the
     inputs in /object_info (count, type, range, combo options), links connect matching types;
  4. checks the workflows are served as templates (/workflow_templates);
  5. submits bad prompts (out-of-range widget, photo with no face) and expects clear errors, then
     submits each API workflow with sonic_client.py, follows it to the end, downloads the MP4 and
     checks its duration (= audio rounded up to whole frames) and that it has an audio stream.
Exit code 0 when everything passed; a summary table is printed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import sonic_client as sc  # noqa: E402

FPS = 25.0
EXPECTED_INPUTS = {
    "SonicTH_Config": ["min_resolution", "expand_ratio", "inference_steps", "dynamic_scale", "motion_scale", "seed",
                       "output", "blinks", "motion_model", "mouth_painter"],
    "SonicTH_FaceLoader": ["image", "config", "face_index"],
    "SonicTH_AudioPreData": ["audio", "duration", "fps", "speech_features", "speech_model", "audio_encoder_output"],
    "SonicTH_Sampler": ["face", "speech", "config"],
    "SonicTH_Postprocess": ["motion", "lip_align", "alignment_offset", "smooth_motion", "auto_align"],
    "SonicTH_Render": ["face", "motion"],
    "SonicTH_SaveMP4": ["face", "motion", "filename_prefix", "crf", "preset", "encoder"],
}
EXPECTED_OUTPUTS = {"SonicTH_Render": ["IMAGE", "AUDIO", "FLOAT"], "SonicTH_FaceLoader": ["SONICTH_FACE", "IMAGE"]}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(server: str, path: str):
    with urllib.request.urlopen(server + path, timeout=60) as r:
        return json.loads(r.read())


def wav_seconds(path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / float(w.getframerate())


def loop_wav(src, dst, seconds: float) -> None:
    with wave.open(str(src)) as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    need = int(seconds * params.framerate) * params.sampwidth * params.nchannels
    data = (frames * (need // len(frames) + 1))[:need]
    with wave.open(str(dst), "wb") as w:
        w.setparams(params)
        w.writeframes(data)


def probe(path) -> dict:
    import av

    info = {"video_duration": None, "audio": False, "audio_duration": None, "frames": 0}
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info["video_duration"] = float(v.duration * v.time_base) if v.duration else None
        info["frames"] = v.frames
        if c.streams.audio:
            a = c.streams.audio[0]
            info["audio"] = True
            info["audio_duration"] = float(a.duration * a.time_base) if a.duration else None
    return info


# --------------------------------------------------------------------------- checks
def widget_inputs(spec: dict) -> list[tuple[str, str, object, dict]]:
    """(name, kind, options, opts) of the inputs the frontend shows as widgets, in order."""
    out = []
    for section in ("required", "optional"):
        for name, entry in (spec["input"].get(section) or {}).items():
            kind, opts = entry[0], (entry[1] if len(entry) > 1 else {}) or {}
            if isinstance(kind, list):
                out.append((name, "COMBO", kind, opts))
            elif kind == "COMBO":
                out.append((name, "COMBO", opts.get("options", []), opts))
            elif kind in WIDGET_TYPES:
                out.append((name, kind, None, opts))
    return out


def check_value(kind, options, opts, value) -> str | None:
    if kind == "COMBO":
        return None if value in options else f"{value!r} not in {options[:8]}"
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    if kind == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    if not isinstance(value, (int, float)) or isinstance(value, bool) or (kind == "INT" and value != int(value)):
        return f"{value!r} is not {kind}"
    if "min" in opts and value < opts["min"] or "max" in opts and value > opts["max"]:
        return f"{value} outside [{opts.get('min')}, {opts.get('max')}]"
    return None


def check_ui_workflow(path: Path, info: dict) -> list[str]:
    wf = json.loads(path.read_text())
    problems = []
    for key in ("nodes", "links", "version"):
        if key not in wf:
            problems.append(f"missing top-level '{key}'")
    nodes = {n["id"]: n for n in wf.get("nodes", [])}
    for n in nodes.values():
        where = f"node {n['id']} {n['type']}"
        spec = info.get(n["type"])
        if spec is None:
            problems.append(f"{where}: type not in /object_info")
            continue
        widgets = widget_inputs(spec)
        values = list(n.get("widgets_values", []))
        i = 0
        for name, kind, options, opts in widgets:
            if i >= len(values):
                problems.append(f"{where}: no value for widget '{name}'")
                break
            err = check_value(kind, options, opts, values[i])
            if err:
                problems.append(f"{where}.{name}: {err}")
            i += 1
            if kind == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed")):
                if i < len(values) and values[i] in ("fixed", "increment", "decrement", "randomize"):
                    i += 1
                else:
                    problems.append(f"{where}.{name}: missing control_after_generate value")
            if opts.get("image_upload"):
                i += 1  # the upload button
            if opts.get("audio_upload"):
                i += 2  # the audio player and the upload button
        if i != len(values):
            problems.append(f"{where}: {len(values)} widget values, /object_info implies {i}")
        names = [x for s in ("required", "optional") for x in (spec["input"].get(s) or {})]
        for inp in n.get("inputs", []):
            if inp["name"] not in names:
                problems.append(f"{where}: input '{inp['name']}' not in /object_info")
        outs = spec["output"]
        for k, out in enumerate(n.get("outputs", [])):
            if k >= len(outs) or out["type"] != outs[k]:
                problems.append(f"{where}: output {k} type {out['type']} != {outs[k:k + 1]}")
    for lid, src, sslot, dst, dslot, typ in wf.get("links", []):
        s, d = nodes.get(src), nodes.get(dst)
        if s is None or d is None:
            problems.append(f"link {lid}: unknown node")
            continue
        out_t = info[s["type"]]["output"][sslot] if s["type"] in info else None
        inp = d["inputs"][dslot]
        if inp.get("link") != lid or lid not in (s["outputs"][sslot].get("links") or []):
            problems.append(f"link {lid}: not registered on both ends")
        spec_in = {**info[d["type"]]["input"].get("required", {}), **(info[d["type"]]["input"].get("optional") or {})}
        want = spec_in.get(inp["name"], [None])[0]
        if out_t != typ or (not isinstance(want, list) and want != typ):
            problems.append(f"link {lid}: {s['type']}[{sslot}]={out_t} -> {d['type']}.{inp['name']}={want} ({typ})")
    return problems


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", required=True, type=Path, help="ComfyUI checkout (with main.py)")
    ap.add_argument("--python", default=sys.executable, help="Python of ComfyUI's environment")
    ap.add_argument("--models-dir", default=os.environ.get("SONIC_MODELS_DIR") or str(REPO / ".cache" / "models"))
    ap.add_argument("--min-resolution", type=int, default=256, help="config_node override (CPU speed)")
    ap.add_argument("--long-seconds", type=float, default=60.0, help="length of the long-audio test clip")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per workflow")
    ap.add_argument("--startup-timeout", type=float, default=240.0)
    a = ap.parse_args(argv)

    comfy = a.comfyui.resolve()
    link = comfy / "custom_nodes" / "sonic_comfy"
    if not any((p.resolve() == REPO) for p in (comfy / "custom_nodes").iterdir() if p.is_dir()):
        link.symlink_to(REPO, target_is_directory=True)
        print(f"linked {link} -> {REPO}")
    module = next(p.name for p in (comfy / "custom_nodes").iterdir() if p.is_dir() and p.resolve() == REPO)

    tmp = Path(tempfile.mkdtemp(prefix="sonic_comfy_run_"))
    for d in ("input", "output", "user", "temp"):
        (tmp / d).mkdir()
    models = Path(a.models_dir).resolve()
    (tmp / "extra_model_paths.yaml").write_text(
        f"sonic_test:\n    base_path: {models.parent}\n    sonic: {models.name}\n")
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    cmd = [a.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
           "--input-directory", str(tmp / "input"), "--output-directory", str(tmp / "output"),
           "--temp-directory", str(tmp / "temp"), "--user-directory", str(tmp / "user"),
           "--extra-model-paths-config", str(tmp / "extra_model_paths.yaml"),
           "--database-url", "sqlite:///:memory:"]
    log_path = tmp / "server.log"
    log = open(log_path, "w")
    print(f"starting ComfyUI ({comfy}) on {server}; log {log_path}")
    proc = subprocess.Popen(cmd, cwd=comfy, stdout=log, stderr=subprocess.STDOUT)
    results: list[tuple[str, bool, str]] = []

    def record(name, ok, detail=""):
        results.append((name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}", flush=True)

    try:
        t0 = time.monotonic()
        while True:
            try:
                get_json(server, "/system_stats")
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() - t0 > a.startup_timeout:
                    log.flush()
                    print(log_path.read_text()[-4000:])
                    record("server start", False, "ComfyUI did not come up")
                    return 1
                time.sleep(1)
        record("server start", True, f"{time.monotonic() - t0:.1f} s")
        stats = get_json(server, "/system_stats")
        print("ComfyUI", stats.get("system", {}).get("comfyui_version"), "torch",
              stats.get("system", {}).get("pytorch_version"))

        # 2. nodes in /object_info
        info = get_json(server, "/object_info")
        problems = []
        for nid, expected in EXPECTED_INPUTS.items():
            spec = info.get(nid)
            if spec is None:
                problems.append(f"{nid} missing")
                continue
            names = [x for s in ("required", "optional") for x in (spec["input"].get(s) or {})]
            if names != expected:
                problems.append(f"{nid} inputs {names}")
            if spec["category"] != "Sonic":
                problems.append(f"{nid} category {spec['category']}")
            for nm, out in EXPECTED_OUTPUTS.items():
                if nm == nid and spec["output"] != out:
                    problems.append(f"{nid} outputs {spec['output']}")
        if "Cannot import" in log_path.read_text() and module in log_path.read_text():
            problems.append("import error in server log")
        record("nodes in /object_info", not problems, "; ".join(problems) or f"{len(EXPECTED_INPUTS)} nodes")

        # 3. uploads + UI workflow checks
        long_wav = tmp / "speech_long.wav"
        loop_wav(REPO / "assets" / "speech.wav", long_wav, a.long_seconds)
        for f in (REPO / "assets" / "grace_hopper.jpg", REPO / "assets" / "speech.wav", long_wav,
                  REPO / "tests" / "data" / "coffee.png"):
            sc.upload_file(f, server)
        info = get_json(server, "/object_info")  # file combos now list the uploads
        for ui in sorted((REPO / "workflows").glob("*.json")):
            if ui.name.endswith("_api.json"):
                continue
            problems = check_ui_workflow(ui, info)
            record(f"UI workflow {ui.name} vs /object_info", not problems, "; ".join(problems[:6]))

        # 4. templates
        listed = get_json(server, "/workflow_templates").get(module, [])
        missing = []
        for wf_file in sorted((REPO / "workflows").glob("*.json")):
            if wf_file.stem not in listed:
                missing.append(f"{wf_file.stem} not listed")
                continue
            try:
                served = get_json(server, f"/api/workflow_templates/{module}/{wf_file.name}")
                if served != json.loads(wf_file.read_text()):
                    missing.append(f"{wf_file.name} differs")
            except Exception as e:  # noqa: BLE001
                missing.append(f"{wf_file.name}: {e}")
        record("workflows served as templates", not missing, "; ".join(missing))

        # 5a. bad input gives clear errors, server keeps serving
        fast_api = REPO / "workflows" / "sonic_fast_audio_image_api.json"
        bad = sc.set_node_input(sc.load_workflow(fast_api), "config_node", min_resolution=16)
        try:
            sc.run_workflow(bad, server, timeout=60)
            record("bad widget value rejected", False, "no error")
        except sc.SonicClientError as e:
            record("bad widget value rejected", "min_resolution" in str(e), str(e)[:160])
        noface = sc.set_node_input(sc.load_workflow(fast_api), "image_loader", image="coffee.png")
        sc.set_node_input(noface, "config_node", min_resolution=a.min_resolution)
        try:
            sc.run_workflow(noface, server, timeout=a.timeout)
            record("no-face photo error", False, "no error")
        except sc.SonicClientError as e:
            record("no-face photo error", "no face" in str(e).lower() and "Traceback" not in str(e), str(e)[:200])

        # 5b. the API workflows
        runs = [("sonic_fast_audio_image_api.json", "speech.wav", wav_seconds(REPO / "assets" / "speech.wav")),
                ("sonic_long_audio_stream_api.json", long_wav.name, wav_seconds(long_wav))]
        for name, audio, seconds in runs:
            wf = sc.load_workflow(REPO / "workflows" / name)
            sc.set_node_input(wf, "config_node", min_resolution=a.min_resolution)
            sc.set_node_input(wf, "audio_loader", audio=audio)
            sc.set_node_input(wf, "image_loader", image=str(REPO / "assets" / "grace_hopper.jpg"))  # upload path
            t = time.monotonic()
            events = []
            try:
                result = sc.run_workflow(wf, server, timeout=a.timeout, progress=lambda k, d: events.append(k))
            except sc.SonicClientError as e:
                record(f"run {name}", False, str(e)[:300])
                continue
            took = time.monotonic() - t
            out = tmp / (Path(name).stem + ".mp4")
            sc.save_video(result, out)
            p = probe(out)
            frames = math.ceil(seconds * FPS - 1e-6)
            want = frames / FPS
            ok = (p["video_duration"] is not None and abs(p["video_duration"] - want) <= 1.0 / FPS + 1e-3
                  and p["audio"] and p["audio_duration"] is not None and abs(p["audio_duration"] - want) < 0.1)
            record(f"run {name}", ok, f"{took:.1f} s, audio {seconds:.2f} s -> MP4 video {p['video_duration']:.3f} s "
                                      f"({p['frames']} frames, expected {want:.3f} s), audio stream "
                                      f"{p['audio_duration']}, progress events {events.count('progress')}, "
                                      f"{'websocket' if events else 'polled'}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    failed = [r for r in results if not r[1]]
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
    if not failed:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"server log and files kept in {tmp}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
