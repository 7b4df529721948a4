"""sonic_core.speech_models: our pure-PyTorch Wav2Vec2/HuBERT against transformers, loaders, timing, visemes.

Tiny random models (width 32-128, 2-3 layers, the real conv strides) are built with
transformers' own classes and saved the ways users have them: a Hugging Face directory
(safetensors, sharded safetensors, pytorch_model.bin with old weight_g/weight_v names) and a
ComfyUI-style single .safetensors with and without the ``wav2vec2.`` prefix. Every route must
reproduce transformers' hidden states and CTC logits on real speech (assets/speech.wav).
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sonic_core.errors import SonicInputError
from sonic_core.motion.visemes import VISEMES
from sonic_core.speech_models import (
    SpeechModelOutput,
    encode,
    features_at_fps,
    ipa_to_visemes,
    load_speech_model,
    normalize_ipa,
    viseme_posteriors,
    visemes_from_ctc,
    vocabulary_type,
)
from sonic_core.speech_models.output import frame_centres

REPO = Path(__file__).resolve().parent.parent
PHONE_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "p", "b", "m", "f", "v", "a", "aɪ", "ə", "iː", "uː", "ʃ", "tʃ",
               "θ", "ð", "s", "t", "ɹ", "w", "j", "ɔ", "oʊ", "ɛ", "k", "n"]
LETTER_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L", "U",
                "M", "W", "C", "F", "G", "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z"]
ATOL = 1e-4


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def speech16k() -> np.ndarray:
    """The repo's real speech sample (8 s espeak English), mono 16 kHz."""
    from sonic_core.audio.decode import load_audio

    return load_audio(REPO / "assets" / "speech.wav", sample_rate=16000, mono=True).samples[0]


def _cfg(cls, *, width=32, heads=4, layers=2, stable=False, norm="group", bias=False, vocab=None, **kw):
    return cls(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * width,
               conv_dim=(16,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
               num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, do_stable_layer_norm=stable,
               feat_extract_norm=norm, conv_bias=bias, vocab_size=len(vocab) if vocab else 32,
               pad_token_id=0, **kw)


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial norms and biases (transformers initialises them to 1/0, which would hide mix-ups)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g) if name.endswith("weight")
                        else 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def _save_dir(model, path: Path, vocab=None, do_normalize=None, **save_kw) -> Path:
    model.save_pretrained(path, **save_kw)
    if vocab is not None:
        (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    if do_normalize is not None:
        (path / "preprocessor_config.json").write_text(json.dumps(
            {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "do_normalize": do_normalize,
             "sampling_rate": 16000, "feature_size": 1, "padding_value": 0.0}))
    return path


def _hf_norm(x: np.ndarray) -> np.ndarray:
    """What Wav2Vec2FeatureExtractor(do_normalize=True) does."""
    return (x - x.mean()) / np.sqrt(x.var() + 1e-7)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (transformers model, path to load, do_normalize) for every loader route."""
    pytest.importorskip("transformers", reason="transformers (requirements-dev.txt) builds the reference models")
    from transformers import (
        HubertConfig,
        HubertForCTC,
        HubertModel,
        Wav2Vec2Config,
        Wav2Vec2ForCTC,
        Wav2Vec2Model,
    )

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("speech_models")
    out = {}
    # Base layout (GroupNorm conv, post-LN), phoneme CTC head, normalising feature extractor.
    m = _randomize(Wav2Vec2ForCTC(_cfg(Wav2Vec2Config, vocab=PHONE_VOCAB)), 1)
    out["w2v_base_phon"] = (m, _save_dir(m, root / "w2v_base_phon", PHONE_VOCAB, True), True)
    # Large layout (LayerNorm conv + bias, stable-LN), letter CTC head, sharded safetensors.
    m = _randomize(Wav2Vec2ForCTC(_cfg(Wav2Vec2Config, stable=True, norm="layer", bias=True, vocab=LETTER_VOCAB)), 2)
    out["w2v_large_letters_sharded"] = (m, _save_dir(m, root / "w2v_large_sharded", LETTER_VOCAB, False,
                                                     max_shard_size="40KB"), False)
    # Same model as an old-style pytorch_model.bin (weight_g / weight_v names), no preprocessor config.
    d = root / "w2v_large_bin"
    _save_dir(m, d, LETTER_VOCAB)
    (d / "model.safetensors").unlink(missing_ok=True)
    for f in d.glob("model*.safetensors*"):
        f.unlink()
    sd = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                              "weight_v"): v
          for k, v in m.state_dict().items()}
    torch.save(sd, d / "pytorch_model.bin")
    out["w2v_large_bin"] = (m, d, True)  # no preprocessor_config: LayerNorm conv -> normalise, as ComfyUI
    # HuBERT base without projection LayerNorm, no head; HuBERT large-style with CTC head.
    m = _randomize(HubertModel(_cfg(HubertConfig, feat_proj_layer_norm=False)), 3)
    out["hubert_base"] = (m, _save_dir(m, root / "hubert_base", None, False), False)
    m = _randomize(HubertForCTC(_cfg(HubertConfig, stable=True, norm="layer", bias=True, vocab=PHONE_VOCAB)), 4)
    out["hubert_large_phon"] = (m, _save_dir(m, root / "hubert_large_phon", PHONE_VOCAB, True), True)
    # ComfyUI-style single files: width 128 (2 heads by the width // 64 rule), 3 layers.
    m = _randomize(Wav2Vec2Model(_cfg(Wav2Vec2Config, width=128, heads=2, layers=3, stable=True, norm="layer",
                                      bias=True)), 5)
    from safetensors.torch import save_file

    plain = {k: v.contiguous() for k, v in m.state_dict().items()}
    save_file(plain, str(root / "comfy_large.safetensors"))
    out["comfy_large"] = (m, root / "comfy_large.safetensors", True)
    m = _randomize(Wav2Vec2ForCTC(_cfg(Wav2Vec2Config, width=128, heads=2, layers=3, vocab=LETTER_VOCAB)), 6)
    pref = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                              "weight_v"): v.contiguous()
            for k, v in m.state_dict().items()}  # wav2vec2. prefix + old weight-norm names + lm_head
    save_file(pref, str(root / "comfy_base_ctc.safetensors"))
    (root / "comfy_base_ctc.vocab.json").write_text(json.dumps({t: i for i, t in enumerate(LETTER_VOCAB)}))
    out["comfy_base_ctc_prefixed"] = (m, root / "comfy_base_ctc.safetensors", False)
    return out


def _reference(hf, x: np.ndarray, do_norm: bool):
    inp = torch.from_numpy(_hf_norm(x) if do_norm else x)[None].float()
    with torch.no_grad():
        o = hf(inp, output_hidden_states=True)
    logits = o.logits[0].numpy() if hasattr(o, "logits") else None
    last = o.last_hidden_state[0].numpy() if hasattr(o, "last_hidden_state") else None
    return o, logits, last


# ------------------------------------------------------------------------------ equality with transformers
@pytest.mark.parametrize("name", ["w2v_base_phon", "w2v_large_letters_sharded", "w2v_large_bin", "hubert_base",
                                  "hubert_large_phon", "comfy_large", "comfy_base_ctc_prefixed"])
def test_every_route_matches_transformers_on_real_speech(models, speech16k, name):
    hf, path, do_norm = models[name]
    x = speech16k[:16000 * 3]
    sm = load_speech_model(path)
    assert sm.do_normalize == do_norm
    out = sm.encode(x, output_hidden_states=True)
    o, ref_logits, ref_last = _reference(hf, x, do_norm)
    L = hf.config.num_hidden_layers
    t = (len(x) - 400) // 320 + 1
    assert out.hidden.shape == (t, hf.config.hidden_size) and out.frame_rate == 50.0
    assert out.hidden_states.shape == (L + 1, t, hf.config.hidden_size)
    # Entries 0..L-1 are every layer's input in both; transformers 5 leaves its last entry before the final
    # LayerNorm in stable-LN models, ours (like ComfyUI's all_layers) is the final output.
    for i in range(L):
        np.testing.assert_allclose(out.hidden_states[i], o.hidden_states[i][0].numpy(), atol=ATOL, rtol=0)
    if ref_logits is not None:
        assert sm.has_ctc and out.vocab == (PHONE_VOCAB if "phon" in name else LETTER_VOCAB)
        np.testing.assert_allclose(out.logits, ref_logits, atol=ATOL, rtol=0)
        base = hf.hubert if hasattr(hf, "hubert") else hf.wav2vec2
        with torch.no_grad():
            ref_last = base(torch.from_numpy(_hf_norm(x) if do_norm else x)[None].float()).last_hidden_state[0].numpy()
    else:
        assert out.logits is None and not sm.has_ctc
    np.testing.assert_allclose(out.hidden, ref_last, atol=ATOL, rtol=0)
    np.testing.assert_allclose(out.hidden_states[-1], ref_last, atol=ATOL, rtol=0)
    assert np.abs(out.hidden).mean() > 0.1  # a non-degenerate signal was compared


def test_single_file_shape_inference(models):
    """No config.json: layers, widths, conv norm/bias, projection norm, LN placement and head come from the keys."""
    large = load_speech_model(models["comfy_large"][1])
    c = large.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (128, 3, 2, 256)
    assert (c.feat_extract_norm, c.conv_bias, c.do_stable_layer_norm) == ("layer", True, True)
    assert c.conv_dim == (16,) * 7 and (c.num_conv_pos_embeddings, c.num_conv_pos_embedding_groups) == (16, 4)
    assert not large.has_ctc and large.kind == "wav2vec2"
    base = load_speech_model(models["comfy_base_ctc_prefixed"][1])
    c = base.config
    assert (c.feat_extract_norm, c.conv_bias, c.do_stable_layer_norm, c.vocab_size) == ("group", False, False, 32)
    assert base.vocab == LETTER_VOCAB and base.vocab_type == "letters" and base.blank_id == 0
    assert base.encoder.lm_head is not None
    # The HF directory's hubert without projection LayerNorm keeps none.
    hub = load_speech_model(models["hubert_base"][1])
    assert hub.kind == "hubert" and hub.encoder.feature_projection.layer_norm is None


def test_dtype_and_device_arguments(models, speech16k):
    sm = load_speech_model(models["w2v_base_phon"][1], dtype="bf16")
    assert sm.dtype == torch.bfloat16 and sm.device.type == "cpu"
    ref = load_speech_model(models["w2v_base_phon"][1]).encode(speech16k[:16000])
    out = sm.encode(speech16k[:16000])
    assert out.hidden.dtype == np.float32 and out.hidden.shape == ref.hidden.shape
    rel = np.abs(out.hidden - ref.hidden).mean() / np.abs(ref.hidden).mean()
    assert rel < 0.05, rel
    # autocast only acts on CUDA: on the CPU the result is the float32 one, bit for bit.
    fp32 = load_speech_model(models["w2v_base_phon"][1])
    np.testing.assert_array_equal(fp32.encode(speech16k[:16000], autocast="bf16").hidden, ref.hidden)


# ------------------------------------------------------------------------------ loader errors
def _msg(excinfo) -> str:
    return str(excinfo.value)


def test_loader_errors_are_user_errors(models, tmp_path):
    with pytest.raises(SonicInputError, match="does not exist"):
        load_speech_model(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SonicInputError, match="no config.json"):
        load_speech_model(empty)
    cfg_only = tmp_path / "cfg_only"
    cfg_only.mkdir()
    (cfg_only / "config.json").write_text((models["w2v_base_phon"][1] / "config.json").read_text())
    with pytest.raises(SonicInputError, match="no weights"):
        load_speech_model(cfg_only)
    for suffix in (".bin", ".pt", ".ckpt"):
        f = tmp_path / f"model{suffix}"
        torch.save({"a": torch.zeros(1)}, f)
        with pytest.raises(SonicInputError, match="safetensors") as e:
            load_speech_model(f)
        assert "Hugging Face directory" in _msg(e)
    bin_file = models["w2v_large_bin"][1] / "pytorch_model.bin"
    with pytest.raises(SonicInputError, match="pass the folder"):
        load_speech_model(bin_file)
    # Unknown architecture: the message names the ones that work.
    conf = tmp_path / "conformer"
    conf.mkdir()
    (conf / "config.json").write_text(json.dumps({"architectures": ["Wav2Vec2ConformerForCTC"],
                                                  "model_type": "wav2vec2-conformer"}))
    with pytest.raises(SonicInputError, match="Wav2Vec2ConformerForCTC") as e:
        load_speech_model(conf)
    assert "Wav2Vec2ForCTC" in _msg(e) and "HubertModel" in _msg(e)
    with pytest.raises(SonicInputError, match="hubert model"):
        load_speech_model(models["hubert_base"][1], kind="wav2vec2")


def test_key_and_shape_mismatches_name_the_key(models, tmp_path):
    from safetensors.torch import load_file, save_file

    src = models["w2v_base_phon"][1]
    sd = load_file(str(src / "model.safetensors"))

    def variant(name, edit):
        d = tmp_path / name
        d.mkdir()
        for f in ("config.json", "vocab.json"):
            (d / f).write_text((src / f).read_text())
        new = dict(sd)
        edit(new)
        save_file(new, str(d / "model.safetensors"))
        return d

    k = "wav2vec2.encoder.layers.1.attention.q_proj.weight"
    d = variant("shape", lambda s: s.__setitem__(k, torch.zeros(16, 32)))
    with pytest.raises(SonicInputError, match=r"'encoder\.layers\.1\.attention\.q_proj\.weight' has shape \(16, 32\)"):
        load_speech_model(d)
    d = variant("missing", lambda s: s.pop("wav2vec2.encoder.layers.0.final_layer_norm.bias"))
    with pytest.raises(SonicInputError, match=r"'encoder\.layers\.0\.final_layer_norm\.bias' is missing"):
        load_speech_model(d)
    d = variant("extra_layer", lambda s: s.__setitem__("wav2vec2.encoder.layers.2.layer_norm.weight", torch.ones(32)))
    with pytest.raises(SonicInputError, match=r"'encoder\.layers\.2\.layer_norm\.weight'.*describes 2 layers"):
        load_speech_model(d)
    d = variant("head", lambda s: s.__setitem__("lm_head.weight", torch.zeros(5, 32)))
    with pytest.raises(SonicInputError, match="lm_head.weight"):
        load_speech_model(d)
    # Single file: a layer whose width disagrees with the rest, and a file that is not wav2vec2 at all.
    plain = load_file(str(models["comfy_large"][1]))
    plain["encoder.layers.2.feed_forward.output_dense.weight"] = torch.zeros(128, 100)
    save_file(plain, str(tmp_path / "bad.safetensors"))
    with pytest.raises(SonicInputError, match=r"encoder\.layers\.2\.feed_forward\.output_dense\.weight"):
        load_speech_model(tmp_path / "bad.safetensors")
    save_file({"model.encoder.embed_positions.weight": torch.zeros(4, 4)}, str(tmp_path / "whisper.safetensors"))
    with pytest.raises(SonicInputError, match="Whisper"):
        load_speech_model(tmp_path / "whisper.safetensors")


# ------------------------------------------------------------------------------ timing
@pytest.mark.parametrize("seconds", [0.01, 0.3, 1.0, 2.37, 5.0])
def test_frame_count_is_the_conv_stacks(models, seconds):
    hf, path, do_norm = models["w2v_base_phon"]
    sm = load_speech_model(path)
    x = np.random.default_rng(1).standard_normal(round(seconds * 16000)).astype(np.float32) * 0.1
    out = sm.encode(x)
    n = len(x)
    want = (max(n, 400) - 400) // 320 + 1
    assert out.num_frames == want and out.num_samples == n
    if n >= 400:  # transformers cannot run below one receptive field; we zero-pad to it
        _, logits, _ = _reference(hf, x, do_norm)
        assert logits.shape[0] == want
    for fps in (24, 25, 29.97, 30, 60):
        nv = math.ceil(seconds * fps - 1e-6)
        feats = out.at_fps(nv, fps)
        assert feats.shape == (nv, 32) and np.isfinite(feats).all()


@pytest.mark.parametrize("fps", [24, 25, 30000 / 1001, 30, 60])
@pytest.mark.parametrize("seconds", [1.0, 3.7, 61.3])
def test_features_at_fps_is_time_exact(fps, seconds):
    """A hidden channel equal to each encoder frame's centre time must read back as each video frame's mid time."""
    n = int(seconds * 16000)
    t = (n - 400) // 320 + 1
    c = frame_centres(t)
    j0 = t // 2
    step = 0.5 * (c[j0 - 1] + c[j0])  # halfway between two encoder frames
    hidden = np.stack([c, (c >= step).astype(np.float64)], axis=1)
    nv = math.ceil(seconds * fps - 1e-6)
    v = features_at_fps(hidden, nv, fps, n)
    mid = (np.arange(nv) + 0.5) / fps
    inside = (np.arange(nv) / fps >= c[0]) & ((np.arange(nv) + 1) / fps <= c[-1])
    np.testing.assert_allclose(v[inside, 0], mid[inside], atol=1e-5)
    # The step (a 20 ms ramp between the two centres) lands in the video frames around its time, nowhere else.
    k = int(np.floor(step * fps))
    assert v[: max(0, k - 1), 1].max(initial=0) == 0.0 and v[k + 2:, 1].min() == pytest.approx(1.0)
    assert 0.0 < v[k, 1] < 1.0 or fps > 50
    assert v[k + 2:, 1].size > 0
    with pytest.raises(SonicInputError, match="do not match"):
        features_at_fps(hidden[:-3], nv, fps, n)


# ------------------------------------------------------------------------------ long audio
def _local_only(sm):
    """Zero every attention output: the network becomes local (conv + positional conv + per-frame MLP)."""
    for layer in sm.encoder.encoder.layers:
        layer.attention.out_proj.weight.zero_()
        layer.attention.out_proj.bias.zero_()
    return sm


@pytest.mark.parametrize("name", ["comfy_large", "w2v_base_phon"])
def test_windows_equal_one_pass_when_the_model_is_local(models, speech16k, name):
    """With attention silenced the only context is the conv stack + positional conv (+-8 frames here) and,
    in GroupNorm models, the clip's conv statistics (shared by all windows), so hop-aligned windows with
    crossfades inside the overlap must reproduce a single pass exactly."""
    sm = _local_only(load_speech_model(models[name][1]))
    x = np.concatenate([speech16k, speech16k[:16000 * 3 + 123]])  # 11 s, last window of odd length
    one = sm.encode(x, window_s=60, output_hidden_states=True)
    win = sm.encode(x, window_s=2.0, overlap_s=0.6, crossfade_s=0.2, batch_size=3, output_hidden_states=True)
    assert win.hidden.shape == one.hidden.shape
    np.testing.assert_allclose(win.hidden_states, one.hidden_states, atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", ["comfy_large", "w2v_base_phon"])
def test_windows_stay_close_to_one_pass_on_real_speech(models, speech16k, name):
    """Full models (global attention; GroupNorm statistics per window in base models) stay close to one pass."""
    sm = load_speech_model(models[name][1])
    x = np.concatenate([speech16k, speech16k])  # 16 s
    one = sm.encode(x, window_s=60)
    win = sm.encode(x, window_s=6.0, overlap_s=2.0, crossfade_s=0.5, batch_size=2)
    rel = np.linalg.norm(win.hidden - one.hidden, axis=1) / np.linalg.norm(one.hidden, axis=1)
    assert np.median(rel) < 0.01 and rel.max() < 0.03, (np.median(rel), rel.max())  # measured: 0.3 % / 0.8 %
    if one.logits is not None:
        agree = (win.logits.argmax(1) == one.logits.argmax(1)).mean()
        assert agree > 0.98, agree  # measured: 99.75 %


# ------------------------------------------------------------------------------ ComfyUI encoder output
def test_from_comfy_encoder_output(models, speech16k):
    from nodes.comfy_io import from_comfy_encoder_output

    sm = load_speech_model(models["comfy_large"][1])
    out = sm.encode(speech16k, output_hidden_states=True)
    comfy = {"encoded_audio": torch.from_numpy(out.hidden)[None],
             "encoded_audio_all_layers": tuple(torch.from_numpy(h)[None] for h in out.hidden_states),
             "audio_samples": len(speech16k)}
    got = from_comfy_encoder_output(comfy)
    assert got.kind == "comfy" and got.logits is None and got.frame_rate == 50.0
    np.testing.assert_array_equal(got.hidden, out.hidden)
    np.testing.assert_array_equal(got.hidden_states, out.hidden_states)
    np.testing.assert_allclose(got.at_fps(200, 25), out.at_fps(200, 25))
    with pytest.raises(SonicInputError, match="Whisper"):
        from_comfy_encoder_output({"encoded_audio": torch.zeros(1, 1500, 8), "audio_samples": len(speech16k)})
    with pytest.raises(SonicInputError, match="ForCTC"):
        visemes_from_ctc(got)


# ------------------------------------------------------------------------------ visemes
def _spikes(vocab, events, n_frames, blank=0):
    """Logits with blank everywhere and token spikes: events = [(frame, token, width)]."""
    lg = np.full((n_frames, len(vocab)), -5.0, np.float32)
    lg[:, blank] = 5.0
    for f, tok, width in events:
        lg[f:f + width, blank] = -5.0
        lg[f:f + width, vocab.index(tok)] = 8.0
    return lg


def _out(logits, vocab, seconds):
    return SpeechModelOutput(hidden=np.zeros((len(logits), 4), np.float32), logits=logits, vocab=vocab,
                             frame_rate=50.0, kind="wav2vec2", num_samples=int(seconds * 16000), blank_id=0,
                             vocab_type=vocabulary_type(vocab))


def _t(frame):
    return (320 * frame + 40) / 16000


def test_ipa_spikes_give_timed_visemes():
    vocab = PHONE_VOCAB
    lg = _spikes(vocab, [(10, "p", 1), (15, "a", 2), (40, "f", 1), (44, "aɪ", 1), (70, "m", 1), (72, "uː", 1)], 100)
    segs = visemes_from_ctc(_out(lg, vocab, 2.0))
    assert all(name in VISEMES for _, _, name in segs)
    assert all(b > a for a, b, _ in segs) and all(s[1] == pytest.approx(n[0]) for s, n in itertools.pairwise(segs))
    speech = [s for s in segs if s[2] != "REST"]
    assert [s[2] for s in speech] == ["MBP", "AA", "FV", "AA", "EE", "MBP", "OO"]
    assert speech[0][:2] == pytest.approx((_t(10), _t(15)))  # p: from its spike to the a's onset
    assert speech[1][:2] == pytest.approx((_t(15), _t(15) + 0.3))  # a: capped at 0.3 s, then REST
    assert segs[0] == (0.0, pytest.approx(_t(10)), "REST")
    d0, d1 = speech[3][1] - speech[3][0], speech[4][1] - speech[4][0]  # aɪ: 55 % AA then 45 % EE
    assert d0 / (d0 + d1) == pytest.approx(0.55) and speech[3][0] == pytest.approx(_t(44))
    rest = [s for s in segs if s[2] == "REST"]
    assert any(a == pytest.approx(_t(15) + 0.3) and b == pytest.approx(_t(40)) for a, b, _ in rest)
    assert segs[-1][1] == pytest.approx(2.0)


def test_letter_spikes_give_visemes_with_english_digraphs():
    vocab = LETTER_VOCAB
    # "MA | THE | SHOE | MAKE | BALL": CTC separates repeated letters with a blank.
    text = [("M", 5), ("A", 9), ("|", 14), ("T", 20), ("H", 22), ("E", 25), ("|", 30), ("S", 35), ("H", 37),
            ("O", 40), ("E", 42), ("|", 46), ("M", 50), ("A", 54), ("K", 58), ("E", 61), ("|", 64), ("B", 70),
            ("A", 73), ("L", 76), ("L", 78)]
    lg = _spikes(vocab, [(f, t, 1) for t, f in text], 95)
    segs = visemes_from_ctc(_out(lg, vocab, 1.9), rest=False)
    names = [s[2] for s in segs]
    # th, sh digraphs; "the"/"shoe" keep their e, "make" loses it (silent e), "ll" is one L.
    assert names == ["MBP", "AA", "TH", "EH", "SH", "OW", "EH", "MBP", "AA", "CONS", "MBP", "AA", "L"], names
    assert segs[0][:2] == pytest.approx((_t(5), _t(9)))  # m runs to the a's onset
    assert segs[1][:2] == pytest.approx((_t(9), _t(20)))  # "|" is not an onset: a runs to the t's onset
    assert segs[2][:2] == pytest.approx((_t(20), _t(25)))  # "th" starts at the t spike
    assert segs[9][:2] == pytest.approx((_t(58), _t(70)))  # k of make runs to the b: the e is gone
    assert segs[-1][0] == pytest.approx(_t(76))


def test_ipa_normalisation_and_coverage():
    assert normalize_ipa("ˈaːɪ̯") == "aɪ" and normalize_ipa("t͡ʃ") == "tʃ" and normalize_ipa("œ̃") == "œ"
    assert ipa_to_visemes("ˈpʰ") == ("MBP",) and ipa_to_visemes("ɱ") == ("FV",) and ipa_to_visemes("ʋ") == ("FV",)
    for c in "pbmɓʙɸβ":
        assert ipa_to_visemes(c) == ("MBP",), c
    for c, v in {"θ": "TH", "ð": "TH", "ʃ": "SH", "tʃ": "SH", "dʒ": "SH", "ɹ": "R", "w": "W", "ɥ": "W", "j": "EE",
                 "l": "L", "ʁ": "CONS", "x": "CONS", "ç": "CONS", "ɲ": "CONS", "ŋ": "CONS"}.items():
        assert ipa_to_visemes(c) == (v,), c
    rounded = {"u": "OO", "y": "OO", "ʊ": "OO", "o": "OW", "ø": "OW", "ɔ": "AO", "œ": "AO", "ɒ": "AO"}
    for c, v in rounded.items():
        assert ipa_to_visemes(c) == (v,), c
    assert ipa_to_visemes("aʊ") == ("AA", "OO") and ipa_to_visemes("ɔɪ") == ("AO", "EE")
    assert ipa_to_visemes("oʊ") == ("OW", "OO") and ipa_to_visemes("ɚ") == ("ER",) and ipa_to_visemes("pf") == ("MBP", "FV")
    assert ipa_to_visemes("<pad>") == () and ipa_to_visemes("|") == () and ipa_to_visemes("ˈ") == ()
    # Every table entry names a viseme the motion model knows.
    from sonic_core.speech_models import visemes as vm

    for table in (vm._IPA_VOWELS, vm._IPA_CONSONANTS, vm._IPA_CLUSTERS, vm._LETTERS, vm._DIGRAPHS):
        assert all(v in VISEMES for vis in table.values() for v in vis)
    # Every vowel of the IPA chart maps to a vowel viseme, never to the consonant fallback.
    for c in "iyɨʉɯuɪʏʊeøɘɵɤoəɛœɜɞʌɔæɐaɶɑɒɚɝ":
        assert ipa_to_visemes(c) and "CONS" not in ipa_to_visemes(c), c


def test_espeak_ipa_from_several_languages():
    """Real espeak-ng IPA (what the espeak-cv-ft vocabularies hold): spikes at each phone's true onset give
    MBP at every bilabial, FV at every labiodental, and never the consonant viseme for a vowel."""
    from .espeak_timing import speak_with_phonemes

    for voice, text in [("en-us", "Open the big box, father thought she would measure the yellow chair."),
                        ("fr", "Un bon vin blanc, le soleil brille."), ("de", "Über die Brücke fährt ein Schiff."),
                        ("es", "El perro corre rápido por la calle.")]:
        samples, rate, phones = speak_with_phonemes(text, voice=voice)
        phones = [p for p in phones if not p.is_pause and normalize_ipa(p.ipa)]
        vocab = ["<pad>", "<s>", "</s>", "<unk>"] + sorted({p.ipa for p in phones})
        assert vocabulary_type(vocab) == "phonemes"
        n = (int(len(samples) / rate * 16000) - 400) // 320 + 1
        events, seen = [], set()
        for p in phones:
            f = max(0, round((p.start * 16000 - 40) / 320))
            if f not in seen and f < n:
                seen.add(f)
                events.append((f, p.ipa, 1))
        segs = visemes_from_ctc(_out(_spikes(vocab, events, n), vocab, len(samples) / rate), rest=False)
        starts = {round(a, 4): v for a, _, v in segs}
        for f, ipa, _ in events:
            first = ipa_to_visemes(ipa)[0]
            assert starts[round(_t(f), 4)] == first
            base = normalize_ipa(ipa)
            if base[0] in "pbm":
                assert first == "MBP", (voice, ipa)
            if base[0] in "fv":
                assert first == "FV", (voice, ipa)
            if base[0] in "aeiouyæɑɒɔəɛɜɪʊʌøœɐ":
                assert first not in ("CONS", "MBP", "FV"), (voice, ipa)


def test_vocabulary_types():
    assert vocabulary_type(PHONE_VOCAB) == "phonemes"
    assert vocabulary_type(LETTER_VOCAB) == "letters"
    assert vocabulary_type(["<pad>", "|"] + list("abcdefghijklmnopqrstuvwxyzäöüß")) == "letters"
    assert vocabulary_type(["<pad>", "|"] + list("你好世界我们他")) == "unsupported"


def test_models_without_ctc_head_explain_what_works(models, speech16k):
    out = load_speech_model(models["hubert_base"][1]).encode(speech16k[:16000])
    assert out.logits is None and out.hidden.shape[0] == 49
    reason = out.viseme_unavailable_reason()
    assert "ForCTC" in reason and "phonemes" in reason and "letters" in reason
    with pytest.raises(SonicInputError, match="ForCTC"):
        visemes_from_ctc(out)
    with pytest.raises(SonicInputError, match="ForCTC"):
        viseme_posteriors(out)


def test_real_model_output_feeds_the_motion_model(models, speech16k):
    """A CTC model's output on real speech becomes segments the motion model's blending accepts."""
    from sonic_core.motion.phonetic import AR, viseme_channels

    sm = load_speech_model(models["w2v_base_phon"][1])
    out = encode(sm, speech16k, batch_size=1)
    segs = visemes_from_ctc(out)
    assert segs and segs[0][0] == 0.0 and segs[-1][1] == pytest.approx(out.duration)
    assert all(b > a for a, b, _ in segs) and all(s[1] == pytest.approx(n[0]) for s, n in itertools.pairwise(segs))
    n = int(np.ceil(out.duration * AR))
    ch = viseme_channels(segs, n, np.ones(n, bool))
    assert set(ch) == {"jaw_open", "lip_width", "pucker", "lip_tuck"} and all(np.isfinite(v).all() for v in ch.values())
    names, post, blank = viseme_posteriors(out)
    assert post.shape == (out.num_frames, len(names)) and names == tuple(VISEMES)
    z = np.exp(out.logits - out.logits.max(1, keepdims=True))
    p = z / z.sum(1, keepdims=True)
    special = p[:, [i for i, t in enumerate(out.vocab) if t in ("<s>", "</s>", "<unk>")]].sum(1)
    np.testing.assert_allclose(post.sum(1) + blank + special, 1.0, atol=1e-5)  # every token's mass is accounted for
