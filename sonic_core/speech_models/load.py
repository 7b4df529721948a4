"""Load user-supplied Wav2Vec2 / HuBERT weights (no hub, no code execution).

    model = load_speech_model("/models/wav2vec2-lv-60-espeak-cv-ft")          # Hugging Face directory
    model = load_speech_model("ComfyUI/models/audio_encoders/wav2vec2_large.safetensors")  # one file
    out = model.encode(mono16k)                                                  # -> SpeechModelOutput

Routes
    directory   config.json + model.safetensors (or a sharded model.safetensors.index.json), else
                pytorch_model.bin (or its sharded index) read with ``torch.load(weights_only=True)``,
                which refuses pickled code. vocab.json and preprocessor_config.json (do_normalize)
                are used when present. Architectures: see SUPPORTED_ARCHITECTURES.
    .safetensors one file as ComfyUI stores it in models/audio_encoders: no config, so the
                architecture is read from the tensor shapes and the keys present (layer count,
                widths, conv norm, conv bias, projection norm, CTC head). Optional
                ``wav2vec2.`` / ``hubert.`` prefix. A ``<name>.vocab.json`` beside it, or
                ``vocab=``, names the CTC head's tokens; ``config=`` overrides the inference.
    anything else (.bin/.pt/.ckpt alone, missing paths, odd directories) -> SonicInputError
                that says what to pass instead.

Two things the keys cannot tell, and how they are decided for a single file (override with
``config=``): attention heads (768 -> 12, 1024/1280/1920 -> 16, else width // 64), and pre- vs
post-LN layers, taken from the conv stack's norm: every released model with LayerNorm in the
conv stack (large-lv60, XLSR, XLS-R, HuBERT large/xlarge) is stable-LN, every GroupNorm one
(base, the original large-960h) is post-LN. That is more reliable than the width, which is
what ComfyUI core uses (a 1024-wide wav2vec2-large-960h is post-LN with GroupNorm).
"""
from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import SonicInputError
from .encoder import SpeechEncoder, SpeechEncoderConfig
from .output import MODEL_RATE, SpeechModelOutput

SUPPORTED_ARCHITECTURES = {
    "Wav2Vec2Model": "wav2vec2",
    "Wav2Vec2ForCTC": "wav2vec2",
    "Wav2Vec2ForPreTraining": "wav2vec2",  # e.g. facebook/wav2vec2-large-xlsr-53: encoder used, quantizer ignored
    "HubertModel": "hubert",
    "HubertForCTC": "hubert",
}
KINDS = ("auto", "wav2vec2", "hubert")
_PREFIXES = {"wav2vec2.": "wav2vec2", "hubert.": "hubert"}
# Training-only parts of a checkpoint: dropped without complaint.
_IGNORED = ("masked_spec_embed", "quantizer.", "project_hid.", "project_q.")
_POS = "encoder.pos_conv_embed.conv."
_STANDARD_KERNELS = (10, 3, 3, 3, 3, 2, 2)
_STANDARD_STRIDES = (5, 2, 2, 2, 2, 2, 2)
_HEADS_BY_WIDTH = {768: 12, 1024: 16, 1280: 16, 1920: 16}


@dataclass
class SpeechModel:
    """A loaded encoder plus what is needed to read its output (vocabulary, blank, normalisation)."""

    encoder: SpeechEncoder
    config: SpeechEncoderConfig
    kind: str  # "wav2vec2" | "hubert"
    vocab: list[str] | None = None
    vocab_type: str | None = None  # "phonemes" | "letters" | "unsupported" | None
    blank_id: int = 0
    do_normalize: bool = False
    sample_rate: int = MODEL_RATE
    source: str = ""
    architecture: str = ""
    ignored_keys: tuple[str, ...] = field(default_factory=tuple)

    @property
    def has_ctc(self) -> bool:
        return self.encoder.lm_head is not None

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype

    @property
    def hop(self) -> int:
        return self.config.hop

    @property
    def receptive_field(self) -> int:
        return self.config.receptive_field

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    def encode(self, audio, **kwargs) -> SpeechModelOutput:
        """See :func:`sonic_core.speech_models.runtime.encode`."""
        from .runtime import encode

        return encode(self, audio, **kwargs)


# ------------------------------------------------------------------------------------------ public
def load_speech_model(path, kind: str = "auto", device="cpu", dtype=None, *, config=None, vocab=None,
                      normalize: bool | None = None) -> SpeechModel:
    """Load a Wav2Vec2 / HuBERT checkpoint from a Hugging Face directory or one .safetensors file.

    kind: "auto" (from config.json / the key prefix), "wav2vec2" or "hubert" (checked against the files).
    dtype: torch dtype (or "fp32"/"fp16"/"bf16"); None = float32.
    config: config.json dict or path, overriding what a single file's shapes imply.
    vocab: vocab.json path, {token: id} dict or list of tokens, for a CTC head without a vocab.json.
    normalize: zero-mean/unit-variance input; None = preprocessor_config.json's do_normalize, else
        True for LayerNorm-conv (large) models and False for GroupNorm (base) ones, as ComfyUI does.
    """
    if kind not in KINDS:
        raise SonicInputError(f"kind must be one of {KINDS}, got {kind!r}.")
    if path is None or str(path).strip() == "":
        raise SonicInputError("No speech model path given. Pass a Hugging Face model directory or a .safetensors file.")
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.exists():
        raise SonicInputError(
            f"Speech model {str(p)!r} does not exist. Pass a Hugging Face model directory (config.json + "
            "model.safetensors) or a .safetensors file from ComfyUI/models/audio_encoders."
        )
    tdtype = _dtype(dtype)
    if p.is_dir():
        return _load_directory(p, kind, device, tdtype, vocab, normalize, config)
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        return _load_single_file(p, kind, device, tdtype, config, vocab, normalize)
    if suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"):
        hint = ""
        if (p.parent / "config.json").is_file():
            hint = f" Its folder has a config.json: pass the folder {str(p.parent)!r} instead."
        raise SonicInputError(
            f"{p.name} is a pickled PyTorch file without its config. A lone pickle is refused (its layout is "
            "unknown and pickles can carry code): convert it to .safetensors, or pass the Hugging Face "
            f"directory that holds it with its config.json.{hint}"
        )
    raise SonicInputError(
        f"{p.name}: not a speech model. Pass a Hugging Face model directory or a .safetensors file."
    )


# ------------------------------------------------------------------------------------------ routes
def _load_directory(d: Path, kind, device, dtype, vocab, normalize, config_override) -> SpeechModel:
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        st = sorted(x.name for x in d.glob("*.safetensors"))
        hint = f" It holds {st[0]!r}: pass that file itself." if len(st) == 1 else ""
        raise SonicInputError(
            f"{d} has no config.json, so it is not a Hugging Face model directory.{hint} Pass a folder with "
            "config.json + model.safetensors (or pytorch_model.bin), or a single .safetensors file."
        )
    cfg = _read_json(cfg_path) if config_override is None else _config_dict(config_override)
    archs = [a for a in (cfg.get("architectures") or []) if isinstance(a, str)]
    model_type = cfg.get("model_type")
    arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
    if archs and arch is None:
        raise SonicInputError(
            f"{cfg_path}: architecture {', '.join(archs)} is not supported. Supported: "
            f"{', '.join(SUPPORTED_ARCHITECTURES)}."
        )
    if arch is None and model_type not in ("wav2vec2", "hubert"):
        raise SonicInputError(
            f"{cfg_path}: model_type {model_type!r} is not supported; need a wav2vec2 or hubert model "
            f"({', '.join(SUPPORTED_ARCHITECTURES)})."
        )
    found_kind = SUPPORTED_ARCHITECTURES[arch] if arch else model_type
    _check_kind(kind, found_kind, str(cfg_path))
    sd, _ = _strip_prefix(_read_directory_weights(d))
    ecfg = SpeechEncoderConfig.from_hf(cfg, found_kind)
    pre = d / "preprocessor_config.json"
    rate = MODEL_RATE
    do_norm = ecfg.feat_extract_norm == "layer"
    if pre.is_file():
        pcfg = _read_json(pre)
        do_norm = bool(pcfg.get("do_normalize", True))  # Wav2Vec2FeatureExtractor's default is True
        rate = int(pcfg.get("sampling_rate", MODEL_RATE))
    if normalize is not None:
        do_norm = bool(normalize)
    if vocab is None and (d / "vocab.json").is_file():
        vocab = d / "vocab.json"
    return _build(sd, ecfg, found_kind, device, dtype, vocab, do_norm, rate, str(d), arch or found_kind,
                  pad_from_config=cfg.get("pad_token_id"))


def _load_single_file(p: Path, kind, device, dtype, config_override, vocab, normalize) -> SpeechModel:
    sd = _read_safetensors(p)
    sd, prefix_kind = _strip_prefix(sd)
    if prefix_kind is not None:
        _check_kind(kind, prefix_kind, p.name)
        found_kind = prefix_kind
    else:
        found_kind = "wav2vec2" if kind == "auto" else kind
    pad = None
    if config_override is not None:
        cfgd = _config_dict(config_override)
        mt = cfgd.get("model_type")
        if mt in ("wav2vec2", "hubert"):
            _check_kind(kind, mt, "the given config")
            found_kind = mt
        ecfg = SpeechEncoderConfig.from_hf(cfgd, found_kind)
        pad = cfgd.get("pad_token_id")
    else:
        ecfg = infer_config_from_state_dict(sd, found_kind, source=p.name)
    do_norm = ecfg.feat_extract_norm == "layer" if normalize is None else bool(normalize)
    if vocab is None:
        side = p.with_name(p.stem + ".vocab.json")
        if side.is_file():
            vocab = side
    return _build(sd, ecfg, found_kind, device, dtype, vocab, do_norm, MODEL_RATE, str(p), "single-file",
                  pad_from_config=pad)


def infer_config_from_state_dict(sd: dict, kind: str = "wav2vec2", source: str = "checkpoint") -> SpeechEncoderConfig:
    """Architecture of an unprefixed Wav2Vec2/HuBERT state dict, from its keys and tensor shapes."""
    if "encoder.layer_norm.weight" not in sd:
        keys = list(sd)
        if any(k.startswith(("model.encoder.embed_positions", "encoder.embed_positions")) for k in keys):
            what = "a Whisper encoder"
        elif any(k.startswith("w2v_encoder.") or ".self_attn." in k for k in keys):
            what = "a fairseq checkpoint (convert it with transformers' convert_wav2vec2_original_pytorch_checkpoint)"
        else:
            what = "not a Wav2Vec2/HuBERT state dict"
        raise SonicInputError(
            f"{source}: key 'encoder.layer_norm.weight' is missing; this is {what}. Pass a Wav2Vec2 or HuBERT "
            "checkpoint (Hugging Face names, optional 'wav2vec2.' prefix)."
        )
    hidden = int(sd["encoder.layer_norm.weight"].shape[0])
    layer_ids = sorted({int(m.group(1)) for k in sd if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    n_layers = (layer_ids[-1] + 1) if layer_ids else 0
    for i in range(n_layers):
        k = f"encoder.layers.{i}.attention.q_proj.weight"
        if k not in sd:
            raise SonicInputError(f"{source}: key {k!r} is missing (layers up to {n_layers - 1} exist).")
    conv_ids = sorted({int(m.group(1)) for k in sd if (m := re.match(r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight$", k))})
    if not conv_ids or conv_ids != list(range(len(conv_ids))):
        raise SonicInputError(f"{source}: the conv feature extractor keys 'feature_extractor.conv_layers.N.conv.weight' "
                              "are missing or not numbered 0..N.")
    dims, kernels = [], []
    for i in conv_ids:
        w = sd[f"feature_extractor.conv_layers.{i}.conv.weight"]
        cin = 1 if i == 0 else dims[-1]
        if w.ndim != 3 or int(w.shape[1]) != cin:
            raise SonicInputError(f"{source}: key 'feature_extractor.conv_layers.{i}.conv.weight' has shape "
                                  f"{tuple(w.shape)}; expected [out, {cin}, kernel].")
        dims.append(int(w.shape[0]))
        kernels.append(int(w.shape[2]))
    if tuple(kernels) != _STANDARD_KERNELS:
        raise SonicInputError(
            f"{source}: conv kernels {tuple(kernels)} are not the standard {_STANDARD_KERNELS}, so the strides "
            "cannot be inferred from the weights; pass config= (the model's config.json)."
        )
    if "feature_extractor.conv_layers.1.layer_norm.weight" in sd:
        norm = "layer"
    elif "feature_extractor.conv_layers.0.layer_norm.weight" in sd:
        norm = "group"
    else:
        raise SonicInputError(f"{source}: key 'feature_extractor.conv_layers.0.layer_norm.weight' is missing; "
                              "the conv stack has no normalisation, which no Wav2Vec2/HuBERT model lacks.")
    pos_w = next((sd[_POS + n] for n in ("weight", "weight_v", "parametrizations.weight.original1") if _POS + n in sd), None)
    if pos_w is None:
        raise SonicInputError(f"{source}: key '{_POS}weight_v' (or parametrizations.weight.original1) is missing.")
    if pos_w.ndim != 3 or hidden % int(pos_w.shape[1]):
        raise SonicInputError(f"{source}: key '{_POS}weight_v' has shape {tuple(pos_w.shape)}, which does not fit "
                              f"width {hidden}.")
    ff = "encoder.layers.0.feed_forward.intermediate_dense.weight"
    inter = int(sd[ff].shape[0]) if ff in sd else 4 * hidden
    heads = _HEADS_BY_WIDTH.get(hidden, max(1, hidden // 64))
    while hidden % heads:
        heads -= 1
    head = sd.get("lm_head.weight")
    return SpeechEncoderConfig(
        hidden_size=hidden, num_hidden_layers=n_layers, num_attention_heads=heads, intermediate_size=inter,
        feat_extract_norm=norm, conv_dim=tuple(dims), conv_kernel=tuple(kernels), conv_stride=_STANDARD_STRIDES,
        conv_bias="feature_extractor.conv_layers.0.conv.bias" in sd,
        num_conv_pos_embeddings=int(pos_w.shape[2]), num_conv_pos_embedding_groups=hidden // int(pos_w.shape[1]),
        conv_pos_batch_norm="encoder.pos_conv_embed.batch_norm.weight" in sd,
        do_stable_layer_norm=norm == "layer",
        feat_proj_layer_norm="feature_projection.layer_norm.weight" in sd,
        vocab_size=int(head.shape[0]) if head is not None else None,
        model_type=kind,
    )


# ------------------------------------------------------------------------------------------ build
def _build(sd, ecfg: SpeechEncoderConfig, kind, device, dtype, vocab, do_norm, rate, source, arch,
           pad_from_config=None) -> SpeechModel:
    from .visemes import vocabulary_type

    sd = _fold_weight_norm(sd, source)
    head = sd.get("lm_head.weight")
    if head is not None:
        if ecfg.vocab_size and int(ecfg.vocab_size) != int(head.shape[0]):
            raise SonicInputError(f"{source}: key 'lm_head.weight' has {int(head.shape[0])} rows but the config's "
                                  f"vocab_size is {ecfg.vocab_size}.")
        ecfg.vocab_size = int(head.shape[0])
    with torch.device("meta"):
        enc = SpeechEncoder(ecfg, with_lm_head=head is not None, do_normalize=do_norm)
    expected = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    ignored = []
    unexpected = []
    for k in list(sd):
        if k in expected:
            continue
        if k.startswith(_IGNORED):
            ignored.append(k)
            sd.pop(k)
        else:
            unexpected.append(k)
    if unexpected:
        k = min(unexpected, key=_natural)
        m = re.match(r"encoder\.layers\.(\d+)\.", k)
        why = (f"the config describes {ecfg.num_hidden_layers} layers" if m and int(m.group(1)) >= ecfg.num_hidden_layers
               else "the model has no such parameter")
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise SonicInputError(f"{source}: unexpected key {k!r}{more}: {why}. Is this a Wav2Vec2/HuBERT checkpoint "
                              "matching its config.json?")
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise SonicInputError(f"{source}: key {missing[0]!r} is missing from the weights{more}; the checkpoint does "
                              "not match its config (or is not a Wav2Vec2/HuBERT model).")
    for k, shape in expected.items():
        if k in sd and tuple(sd[k].shape) != shape:
            raise SonicInputError(f"{source}: key {k!r} has shape {tuple(sd[k].shape)} in the weights but the config "
                                  f"needs {shape}; the weights and config.json do not belong together.")
    for k in expected:
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = torch.zeros((), dtype=torch.long)
    sd = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    enc.load_state_dict(sd, strict=True, assign=True)
    enc = enc.to(device=torch.device(device)).eval()
    for prm in enc.parameters():
        prm.requires_grad_(False)
    tokens = _vocab_list(vocab, ecfg.vocab_size, source) if (vocab is not None and head is not None) else None
    if tokens is not None and pad_from_config is not None and 0 <= int(pad_from_config) < len(tokens):
        blank = int(pad_from_config)
    elif tokens is not None and "<pad>" in tokens:
        blank = tokens.index("<pad>")
    else:
        blank = int(pad_from_config) if pad_from_config is not None else 0
    return SpeechModel(encoder=enc, config=ecfg, kind=kind, vocab=tokens,
                       vocab_type=vocabulary_type(tokens) if tokens else None, blank_id=blank,
                       do_normalize=do_norm, sample_rate=rate, source=source, architecture=arch,
                       ignored_keys=tuple(ignored))


# ------------------------------------------------------------------------------------------ helpers
def _natural(k: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", k)]


def _dtype(dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    try:
        return names[str(dtype).lower()]
    except KeyError:
        raise SonicInputError(f"dtype must be one of {sorted(names)} or a torch dtype, got {dtype!r}.") from None


def _check_kind(asked: str, found: str, where: str) -> None:
    if asked != "auto" and asked != found:
        raise SonicInputError(f"kind={asked!r} was asked for, but {where} is a {found} model. Use kind='auto' or "
                              f"kind={found!r}.")


def _read_json(p: Path) -> dict:
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise SonicInputError(f"Cannot read {p}: {e}") from None


def _config_dict(c) -> dict:
    if isinstance(c, SpeechEncoderConfig):
        return {**c.extra, **{k: v for k, v in c.__dict__.items() if k != "extra"}}
    if isinstance(c, dict):
        return dict(c)
    return _read_json(Path(os.fspath(c)))


def _strip_prefix(sd: dict) -> tuple[dict, str | None]:
    """Drop the ``wav2vec2.`` / ``hubert.`` prefix that *ForCTC and *ForPreTraining checkpoints carry."""
    for pre, kind in _PREFIXES.items():
        if any(k.startswith(pre) for k in sd):
            return {k.removeprefix(pre): v for k, v in sd.items()}, kind
    return dict(sd), None


def _fold_weight_norm(sd: dict, source: str) -> dict:
    """Weight-normalised positional conv (g, v; old or parametrization names) -> one plain weight."""
    g = sd.pop(_POS + "weight_g", None)
    v = sd.pop(_POS + "weight_v", None)
    g2 = sd.pop(_POS + "parametrizations.weight.original0", None)
    v2 = sd.pop(_POS + "parametrizations.weight.original1", None)
    g = g if g is not None else g2
    v = v if v is not None else v2
    if g is None and v is None:
        return sd
    if g is None or v is None:
        raise SonicInputError(f"{source}: the positional conv has only half of its weight norm "
                              f"(key {_POS + ('weight_g' if g is None else 'weight_v')!r} is missing).")
    if g.ndim != v.ndim or any(a not in (1, b) for a, b in zip(g.shape, v.shape)):
        raise SonicInputError(f"{source}: key {_POS}weight_g has shape {tuple(g.shape)}, which does not fit "
                              f"weight_v {tuple(v.shape)}.")
    dims = tuple(i for i in range(v.ndim) if g.shape[i] == 1)
    vf = v.float()
    norm = vf.pow(2).sum(dim=dims, keepdim=True).sqrt()
    sd[_POS + "weight"] = (vf * (g.float() / norm)).to(v.dtype)
    return sd


def _read_safetensors(p: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:  # truncated / not safetensors
        raise SonicInputError(f"Cannot read {p} as safetensors ({e}). Is the file complete?") from None


def _read_pickle_weights(p: Path) -> dict:
    try:
        sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError, AttributeError) as e:
        # weights_only refuses anything but tensors and plain containers (UnpicklingError)
        raise SonicInputError(
            f"Cannot read {p} with torch.load(weights_only=True) ({type(e).__name__}: {e}). Only plain tensor "
            "checkpoints are accepted (code in pickles is never run); convert it to model.safetensors."
        ) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise SonicInputError(f"{p} does not hold a state dict of tensors.")
    return sd


def _read_directory_weights(d: Path) -> dict:
    if (d / "model.safetensors").is_file():
        return _read_safetensors(d / "model.safetensors")
    for index, reader in (("model.safetensors.index.json", _read_safetensors),
                          ("pytorch_model.bin.index.json", _read_pickle_weights)):
        if (d / index).is_file():
            weight_map = _read_json(d / index).get("weight_map") or {}
            files = sorted(set(weight_map.values()))
            if not files:
                raise SonicInputError(f"{d / index} has an empty weight_map.")
            sd: dict = {}
            for name in files:
                shard = d / name
                if not shard.is_file():
                    raise SonicInputError(f"{d / index} lists shard {name!r}, which is not in {d}.")
                sd.update(reader(shard))
            return sd
    if (d / "pytorch_model.bin").is_file():
        return _read_pickle_weights(d / "pytorch_model.bin")
    present = ", ".join(sorted(x.name for x in d.iterdir())[:12]) or "nothing"
    raise SonicInputError(
        f"{d} has config.json but no weights (model.safetensors, model.safetensors.index.json or "
        f"pytorch_model.bin); it holds: {present}."
    )


def _vocab_list(vocab, size: int | None, source: str) -> list[str]:
    """vocab.json path / {token: id} / [tokens] -> list indexed by logit column."""
    if isinstance(vocab, (str, os.PathLike)):
        vocab = _read_json(Path(os.fspath(vocab)))
    if isinstance(vocab, dict) and vocab and all(isinstance(v, dict) for v in vocab.values()):
        # MMS-style {language: {token: id}}: English if present, else the only one.
        if "eng" in vocab:
            vocab = vocab["eng"]
        elif len(vocab) == 1:
            vocab = next(iter(vocab.values()))
        else:
            raise SonicInputError(f"{source}: vocab.json holds several languages ({', '.join(list(vocab)[:5])}, ...); "
                                  "pass vocab= with one language's {token: id} dict.")
    if isinstance(vocab, dict):
        try:
            ids = {str(t): int(i) for t, i in vocab.items()}
        except (TypeError, ValueError):
            raise SonicInputError(f"{source}: vocab must map tokens to integer ids.") from None
        n = max(ids.values()) + 1 if ids else 0
        tokens = [f"<unused_{i}>" for i in range(n)]
        for t, i in ids.items():
            if i < 0:
                raise SonicInputError(f"{source}: vocab id {i} for {t!r} is negative.")
            tokens[i] = t
    elif isinstance(vocab, (list, tuple)):
        tokens = [str(t) for t in vocab]
    else:
        raise SonicInputError(f"{source}: vocab must be a vocab.json path, a {{token: id}} dict or a list of tokens.")
    if size is not None:
        if len(tokens) > size:
            raise SonicInputError(f"{source}: the vocabulary has {len(tokens)} tokens but the CTC head (lm_head) has "
                                  f"{size} outputs; the vocab.json belongs to another model.")
        tokens += [f"<unused_{i}>" for i in range(len(tokens), size)]
    return tokens
