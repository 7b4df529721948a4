"""Write the shipped workflows from one description: UI format (drag-and-drop) + API format twins.

    python tests/comfyui/make_workflows.py          # rewrite workflows/
    python tests/comfyui/make_workflows.py --check  # exit 1 if a file differs from what it would write

workflows/ is what the README points to and what ComfyUI serves as the pack's templates (it
looks for `example_workflows/`, `example/`, `examples/`, `workflow/`, `workflows/`; the pack has
only the last, so each workflow is listed once). tests/test_nodes.py checks the files are up to date.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDERS = [REPO / "workflows"]
IMAGE_FILE = "grace_hopper.jpg"  # assets/grace_hopper.jpg, uploaded by the client / run_workflows.py
AUDIO_FILE = "speech.wav"  # assets/speech.wav
VIDEO_FILE = "talk.mp4"  # a video of the person speaking, in ComfyUI's input folder (run_workflows.py uploads one)

# Output slots of the node types we use: (name, type).
OUTPUTS = {
    "LoadImage": [("IMAGE", "IMAGE"), ("MASK", "MASK")],
    "LoadAudio": [("AUDIO", "AUDIO")],
    "LoadVideo": [("VIDEO", "VIDEO")],
    "SonicTH_DubVideo": [("path", "STRING")],
    "SonicTH_Config": [("config", "SONICTH_CONFIG")],
    "SonicTH_FaceLoader": [("face", "SONICTH_FACE"), ("preview", "IMAGE")],
    "SonicTH_AudioPreData": [("speech", "SONICTH_SPEECH"), ("frames", "INT"), ("seconds", "FLOAT")],
    "SonicTH_Sampler": [("motion", "SONICTH_MOTION")],
    "SonicTH_Postprocess": [("motion", "SONICTH_MOTION")],
    "SonicTH_Render": [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")],
    "SonicTH_SaveMP4": [("path", "STRING")],
    "CreateVideo": [("VIDEO", "VIDEO")],
    "SaveVideo": [],
    "PreviewImage": [],
}


def node(nid, type_, pos, size, widgets=(), links=(), title=None, ui_extra=()):
    """widgets: [(name, value)] in widget order; links: [(input, type, src_id, src_slot, optional, is_widget)];
    ui_extra: values the frontend adds after a widget (control_after_generate, upload buttons), by index."""
    return dict(id=nid, type=type_, pos=pos, size=size, widgets=list(widgets), links=list(links), title=title,
                ui_extra=dict(ui_extra))


def config_node(nid, pos, min_resolution=512):
    return node(nid, "SonicTH_Config", pos, [300, 250], title="config_node", widgets=[
        ("min_resolution", min_resolution), ("expand_ratio", 0.5), ("inference_steps", 25),
        ("dynamic_scale", 1.0), ("motion_scale", 1.0), ("seed", 0), ("output", "crop"), ("blinks", True),
        ("motion_model", "phonetic"), ("mouth_painter", "procedural")],
        ui_extra={6: "fixed"})  # control_after_generate after seed


def common(save_nodes, min_resolution=512, duration=0.0):
    return [
        node(1, "LoadImage", [0, 0], [300, 330], title="image_loader", widgets=[("image", IMAGE_FILE)],
             ui_extra={1: "image"}),
        node(2, "LoadAudio", [0, 380], [300, 140], title="audio_loader", widgets=[("audio", AUDIO_FILE)],
             ui_extra={1: None, 2: None}),
        config_node(3, [0, 570], min_resolution),
        node(4, "SonicTH_FaceLoader", [360, 0], [300, 80], title="face_node", widgets=[("face_index", 0)],
             links=[("image", "IMAGE", 1, 0, False, False), ("config", "SONICTH_CONFIG", 3, 0, False, False)]),
        node(5, "SonicTH_AudioPreData", [360, 380], [300, 110], title="predata_node",
             widgets=[("duration", duration), ("fps", 25.0), ("speech_features", "builtin"), ("speech_model", "none")],
             links=[("audio", "AUDIO", 2, 0, False, False)]),
        node(6, "SonicTH_Sampler", [720, 200], [260, 70], title="sampler_node", links=[
            ("face", "SONICTH_FACE", 4, 0, False, False), ("speech", "SONICTH_SPEECH", 5, 0, False, False),
            ("config", "SONICTH_CONFIG", 3, 0, False, False)]),
        node(7, "SonicTH_Postprocess", [720, 330], [300, 110], title="postprocess_node",
             widgets=[("lip_align", True), ("alignment_offset", 0.0), ("smooth_motion", True), ("auto_align", False)],
             links=[("motion", "SONICTH_MOTION", 6, 0, False, False)]),
        node(8, "PreviewImage", [360, 560], [300, 300], title="face_preview",
             links=[("images", "IMAGE", 4, 1, False, False)]),
        *save_nodes,
    ]


def fast_graph():
    return common([
        node(9, "SonicTH_Render", [1080, 200], [260, 70], title="render_node", links=[
            ("face", "SONICTH_FACE", 4, 0, False, False), ("motion", "SONICTH_MOTION", 7, 0, False, False)]),
        node(10, "CreateVideo", [1080, 330], [260, 80], title="create_video", widgets=[("fps", 25.0)], links=[
            ("images", "IMAGE", 9, 0, False, False), ("audio", "AUDIO", 9, 1, True, False),
            ("fps", "FLOAT", 9, 2, False, True)]),
        node(11, "SaveVideo", [1400, 200], [420, 480], title="save_node",
             widgets=[("filename_prefix", "sonic/sonic_fast"), ("format", "auto"), ("codec", "auto")],
             links=[("video", "VIDEO", 10, 0, False, False)]),
    ])


def long_graph():
    return common([
        node(9, "SonicTH_SaveMP4", [1080, 200], [420, 480], title="save_node",
             widgets=[("filename_prefix", "sonic/sonic_long"), ("crf", 20), ("preset", "auto"), ("encoder", "auto")],
             links=[("face", "SONICTH_FACE", 4, 0, False, False), ("motion", "SONICTH_MOTION", 7, 0, False, False)]),
    ])


def dub_graph():
    return [
        node(1, "LoadVideo", [0, 0], [300, 330], title="video_loader", widgets=[("file", VIDEO_FILE)],
             ui_extra={1: "image"}),
        node(2, "LoadAudio", [0, 380], [300, 140], title="audio_loader", widgets=[("audio", AUDIO_FILE)],
             ui_extra={1: None, 2: None}),
        node(3, "SonicTH_DubVideo", [360, 0], [420, 560], title="dub_node", widgets=[
            ("filename_prefix", "sonic/sonic_dub"), ("mouth_source", "auto"), ("dynamic_scale", 1.0),
            ("face_index", 0), ("crf", 18), ("video_fps", 0.0), ("video_path", ""), ("output_fps", 0.0),
            ("transcript", ""), ("transcript_language", "en-us"), ("mouth_painter", "procedural")],
            links=[("audio", "AUDIO", 2, 0, False, False), ("video", "VIDEO", 1, 0, True, False)]),
    ]


def to_api(graph) -> dict:
    out = {}
    for n in graph:
        inputs = {name: value for name, value in n["widgets"]}
        for name, _t, src, slot, _opt, _w in n["links"]:
            inputs[name] = [str(src), slot]
        out[str(n["id"])] = {"inputs": inputs, "class_type": n["type"], "_meta": {"title": n["title"] or n["type"]}}
    return out


def to_ui(graph, name: str) -> dict:
    links, by_src = [], {}
    for n in graph:
        for slot_in, (_name, typ, src, slot, _opt, _w) in enumerate(n["links"]):
            lid = len(links) + 1
            links.append([lid, src, slot, n["id"], None, typ])
            by_src.setdefault((src, slot), []).append(lid)
    nodes = []
    link_ids = iter(range(1, len(links) + 1))
    order = {n["id"]: i for i, n in enumerate(graph)}
    for n in graph:
        inputs = []
        for (iname, typ, src, slot, optional, is_widget) in n["links"]:
            lid = next(link_ids)
            entry = {"name": iname, "type": typ, "link": lid}
            if optional:
                entry["shape"] = 7
            if is_widget:
                entry["widget"] = {"name": iname}
            links[lid - 1][4] = len(inputs)
            inputs.append(entry)
        outputs = [{"name": oname, "type": otype, "slot_index": i, "links": by_src.get((n["id"], i)) or None}
                   for i, (oname, otype) in enumerate(OUTPUTS[n["type"]])]
        values = []
        for name, value in n["widgets"]:
            values.append(value)
            while len(values) in n["ui_extra"]:
                values.append(n["ui_extra"][len(values)])
        entry = {"id": n["id"], "type": n["type"], "pos": n["pos"], "size": n["size"], "flags": {},
                 "order": order[n["id"]], "mode": 0, "inputs": inputs, "outputs": outputs,
                 "properties": {"Node name for S&R": n["type"]}, "widgets_values": values}
        if n["title"]:
            entry["title"] = n["title"]
        nodes.append(entry)
    return {"id": f"sonic-{name}", "revision": 0, "last_node_id": max(n["id"] for n in graph),
            "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [40, 40]}}, "version": 0.4}


def files() -> dict[str, str]:
    out = {}
    for name, graph in (("sonic_fast_audio_image", fast_graph()), ("sonic_long_audio_stream", long_graph()),
                        ("sonic_dub_video", dub_graph())):
        out[f"{name}.json"] = json.dumps(to_ui(graph, name), indent=2) + "\n"
        out[f"{name}_api.json"] = json.dumps(to_api(graph), indent=2) + "\n"
    return out


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for folder in FOLDERS:
        for fname, text in files().items():
            path = folder / fname
            if check:
                if not path.is_file() or path.read_text() != text:
                    stale.append(str(path))
            else:
                folder.mkdir(exist_ok=True)
                path.write_text(text)
    if stale:
        print("out of date (run tests/comfyui/make_workflows.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
