"""Wav2Vec2 / HuBERT encoder in plain PyTorch, with Hugging Face's parameter names.

Why our own module instead of ``transformers``: the engine must run inside any ComfyUI
install without pulling a large dependency whose version we cannot pin, and users bring
their own weights (no hub). The maths is the published architecture (Baevski et al. 2020,
Hsu et al. 2021) and every parameter keeps the name Hugging Face gives it, so a checkpoint's
state dict loads key for key (see ``load.py``) and the test suite can compare outputs with
``transformers`` itself.

Evaluation only: no masking, no dropout, no layer drop, no attention mask (every row of a
batch has the same length; ``runtime.encode`` guarantees that).

Layout (names as in the state dict)::

    feature_extractor.conv_layers.N.conv            Conv1d stack, 16 kHz -> 50 Hz (hop 320, field 400)
    feature_extractor.conv_layers.N.layer_norm      GroupNorm on layer 0 ("group") or LayerNorm on all ("layer")
    feature_projection.layer_norm / .projection     (HuBERT base has no layer_norm: feat_proj_layer_norm)
    encoder.pos_conv_embed.conv                     grouped conv over time, weight norm folded at load time
    encoder.layer_norm                              before the layers (post-LN, base) or after them (stable-LN)
    encoder.layers.N.attention.{q,k,v,out}_proj
    encoder.layers.N.layer_norm / final_layer_norm
    encoder.layers.N.feed_forward.{intermediate,output}_dense
    lm_head                                         only in *ForCTC checkpoints
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SonicInputError

_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_python": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def _activation(name: str):
    try:
        return _ACTIVATIONS[str(name)]
    except KeyError:
        raise SonicInputError(
            f"Activation {name!r} in the model's config.json is not supported; use one of {sorted(_ACTIVATIONS)}."
        ) from None


@dataclass
class SpeechEncoderConfig:
    """The architecture options of a Wav2Vec2 / HuBERT checkpoint (the config.json fields that matter at inference).

    Defaults are facebook/wav2vec2-base's. ``vocab_size`` is None when the checkpoint has no CTC head.
    """

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    feat_extract_norm: str = "group"  # "group": GroupNorm on conv layer 0 only; "layer": LayerNorm on every conv layer
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    conv_pos_batch_norm: bool = False  # a few HuBERT variants normalise before the positional conv
    do_stable_layer_norm: bool = False  # True = pre-LN layers (large-lv60, XLSR, HuBERT large)
    feat_proj_layer_norm: bool = True  # HuBERT option; Wav2Vec2 always has it
    layer_norm_eps: float = 1e-5
    vocab_size: int | None = None
    pad_token_id: int = 0
    model_type: str = "wav2vec2"
    extra: dict = field(default_factory=dict, repr=False)  # the other config.json fields, untouched

    @classmethod
    def from_hf(cls, cfg: dict, model_type: str | None = None) -> SpeechEncoderConfig:
        """Build from a Hugging Face config.json dict; refuses options that change the output and are not implemented."""
        cfg = dict(cfg)
        mt = model_type or cfg.get("model_type") or "wav2vec2"
        if cfg.get("add_adapter"):
            raise SonicInputError(
                "This checkpoint's config.json has add_adapter=true (a downsampling adapter after the encoder); "
                "that variant is not supported. Use a plain Wav2Vec2/HuBERT checkpoint."
            )
        if cfg.get("adapter_attn_dim"):
            raise SonicInputError(
                "This checkpoint's config.json has adapter_attn_dim (MMS language adapters inside every layer); "
                "that variant is not supported. Use a plain Wav2Vec2/HuBERT checkpoint."
            )
        names = {f.name for f in fields(cls)} - {"extra"}
        kw = {k: cfg[k] for k in names if k in cfg and cfg[k] is not None}
        for k in ("conv_dim", "conv_kernel", "conv_stride"):
            if k in kw:
                kw[k] = tuple(int(v) for v in kw[k])
        if mt == "wav2vec2":
            kw["feat_proj_layer_norm"] = True  # Wav2Vec2FeatureProjection always normalises
        kw["model_type"] = mt
        if "vocab_size" not in kw:
            kw["vocab_size"] = None
        out = cls(**kw, extra={k: v for k, v in cfg.items() if k not in names})
        out.validate()
        return out

    def validate(self) -> None:
        n = len(self.conv_dim)
        if not (len(self.conv_kernel) == len(self.conv_stride) == n) or n == 0:
            raise SonicInputError(
                f"config.json: conv_dim, conv_kernel and conv_stride must have the same length "
                f"(got {len(self.conv_dim)}, {len(self.conv_kernel)}, {len(self.conv_stride)})."
            )
        if self.feat_extract_norm not in ("group", "layer"):
            raise SonicInputError(f"config.json: feat_extract_norm must be 'group' or 'layer', got {self.feat_extract_norm!r}.")
        if self.num_attention_heads <= 0 or self.hidden_size % self.num_attention_heads:
            raise SonicInputError(
                f"config.json: hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}."
            )
        _activation(self.hidden_act)
        _activation(self.feat_extract_activation)

    # ---- frame geometry (exact, from the conv stack) -------------------------------------------
    @property
    def hop(self) -> int:
        """Input samples between two output frames (320 for every released model: 20 ms at 16 kHz)."""
        return int(math.prod(self.conv_stride))

    @property
    def receptive_field(self) -> int:
        """Input samples one output frame sees (400 = 25 ms for the standard stack)."""
        rf, jump = 1, 1
        for k, s in zip(self.conv_kernel, self.conv_stride):
            rf += (k - 1) * jump
            jump *= s
        return int(rf)

    def num_frames(self, num_samples: int) -> int:
        """Output frames for `num_samples` input samples (0 when shorter than the receptive field)."""
        n = int(num_samples)
        for k, s in zip(self.conv_kernel, self.conv_stride):
            if n < k:
                return 0
            n = (n - k) // s + 1
        return n


class EncoderOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # [B, T, C]
    hidden_states: tuple[torch.Tensor, ...] | None  # L+1 entries, [B, T, C] each (see SpeechEncoder.forward)
    logits: torch.Tensor | None  # [B, T, V] when the module has an lm_head


class _ConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, bias: bool, norm: str | None, act):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel_size=kernel, stride=stride, bias=bias)
        self.norm_kind = norm
        if norm == "group":  # one group per channel = per-channel normalisation over time
            self.layer_norm = nn.GroupNorm(num_groups=cout, num_channels=cout, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(cout, elementwise_affine=True)
        self.act = act

    def forward(self, x, stats=None):
        x = self.conv(x)
        if self.norm_kind == "group" and stats is not None:
            # Per-channel statistics of the whole clip (see SpeechEncoder.conv_norm_stats) instead of this input's.
            mean, var = (s.to(x.dtype) for s in stats)
            if mean.dim() == 1:
                mean, var = mean[None], var[None]
            x = (x - mean[..., None]) * torch.rsqrt(var[..., None] + self.layer_norm.eps)
            x = x * self.layer_norm.weight[:, None] + self.layer_norm.bias[:, None]
        elif self.norm_kind == "group":
            x = self.layer_norm(x)
        elif self.norm_kind == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return self.act(x)


class _FeatureEncoder(nn.Module):
    def __init__(self, c: SpeechEncoderConfig):
        super().__init__()
        act = _activation(c.feat_extract_activation)
        layers = []
        for i, (d, k, s) in enumerate(zip(c.conv_dim, c.conv_kernel, c.conv_stride)):
            cin = 1 if i == 0 else c.conv_dim[i - 1]
            norm = "layer" if c.feat_extract_norm == "layer" else ("group" if i == 0 else None)
            layers.append(_ConvLayer(cin, d, k, s, c.conv_bias, norm, act))
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, x, stats=None):  # [B, N] -> [B, C, T]
        x = x[:, None]
        for i, layer in enumerate(self.conv_layers):
            x = layer(x, stats if i == 0 else None)
        return x


class _FeatureProjection(nn.Module):
    def __init__(self, c: SpeechEncoderConfig):
        super().__init__()
        if c.feat_proj_layer_norm:
            self.layer_norm = nn.LayerNorm(c.conv_dim[-1], eps=c.layer_norm_eps)
        else:
            self.layer_norm = None
        self.projection = nn.Linear(c.conv_dim[-1], c.hidden_size)

    def forward(self, x):
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.projection(x)


class _PositionalConvEmbedding(nn.Module):
    """Relative position information: a wide grouped conv over time (128 frames = 2.56 s for released models).

    Checkpoints store it weight-normalised (g, v); ``load.py`` folds that into a plain ``weight``
    because inference never needs g and v separately.
    """

    def __init__(self, c: SpeechEncoderConfig):
        super().__init__()
        k = c.num_conv_pos_embeddings
        if c.conv_pos_batch_norm:
            self.batch_norm = nn.BatchNorm1d(c.hidden_size)
        else:
            self.batch_norm = None
        self.conv = nn.Conv1d(c.hidden_size, c.hidden_size, kernel_size=k, padding=k // 2,
                              groups=c.num_conv_pos_embedding_groups)
        self.remove = 1 if k % 2 == 0 else 0  # an even kernel with padding k//2 yields one extra frame
        self.act = _activation(c.feat_extract_activation)

    def forward(self, x):  # [B, T, C]
        x = x.transpose(1, 2)
        if self.batch_norm is not None:
            x = self.batch_norm(x)
        x = self.conv(x)
        if self.remove:
            x = x[:, :, :-self.remove]
        return self.act(x).transpose(1, 2)


class _Attention(nn.Module):
    def __init__(self, c: SpeechEncoderConfig):
        super().__init__()
        d = c.hidden_size
        self.heads = c.num_attention_heads
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        h = self.heads

        def split(y):
            return y.view(b, t, h, d // h).transpose(1, 2)

        o = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)))
        return self.out_proj(o.transpose(1, 2).reshape(b, t, d))


class _FeedForward(nn.Module):
    def __init__(self, c: SpeechEncoderConfig):
        super().__init__()
        self.intermediate_dense = nn.Linear(c.hidden_size, c.intermediate_size)
        self.output_dense = nn.Linear(c.intermediate_size, c.hidden_size)
        self.act = _activation(c.hidden_act)

    def forward(self, x):
        return self.output_dense(self.act(self.intermediate_dense(x)))


class _EncoderLayer(nn.Module):
    def __init__(self, c: SpeechEncoderConfig):
        super().__init__()
        self.stable = c.do_stable_layer_norm
        self.attention = _Attention(c)
        self.layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.feed_forward = _FeedForward(c)
        self.final_layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x):
        if self.stable:  # pre-LN
            x = x + self.attention(self.layer_norm(x))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.attention(x))  # post-LN
        return self.final_layer_norm(x + self.feed_forward(x))


class _Encoder(nn.Module):
    def __init__(self, c: SpeechEncoderConfig):
        super().__init__()
        self.stable = c.do_stable_layer_norm
        self.pos_conv_embed = _PositionalConvEmbedding(c)
        self.layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.layers = nn.ModuleList([_EncoderLayer(c) for _ in range(c.num_hidden_layers)])

    def forward(self, x, keep_all: bool):
        x = x + self.pos_conv_embed(x)
        if not self.stable:
            x = self.layer_norm(x)
        states = []
        for layer in self.layers:
            if keep_all:
                states.append(x)
            x = layer(x)
        if self.stable:
            x = self.layer_norm(x)
        if keep_all:
            states.append(x)
        return x, (tuple(states) if keep_all else None)


class SpeechEncoder(nn.Module):
    """Wav2Vec2 / HuBERT (evaluation only). Input: 16 kHz waveform [B, N]; output ~50 Hz frames.

    ``forward`` does not normalise the waveform: normalisation is per *clip* (not per window),
    so ``runtime.encode`` applies :meth:`normalize_input` once before cutting windows.
    """

    def __init__(self, config: SpeechEncoderConfig, with_lm_head: bool = False, do_normalize: bool = False):
        super().__init__()
        config.validate()
        self.config = config
        self.do_normalize = bool(do_normalize)
        self.feature_extractor = _FeatureEncoder(config)
        self.feature_projection = _FeatureProjection(config)
        self.encoder = _Encoder(config)
        if with_lm_head:
            if not config.vocab_size:
                raise SonicInputError("A CTC head needs vocab_size in the config.")
            self.lm_head = nn.Linear(config.hidden_size, int(config.vocab_size))
        else:
            self.lm_head = None
        self.eval()

    @staticmethod
    def normalize_input(x: torch.Tensor) -> torch.Tensor:
        """Zero mean, unit variance over the last axis, as Hugging Face's Wav2Vec2FeatureExtractor (eps 1e-7)."""
        x = x.float()
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + 1e-7)

    def conv_norm_stats(self, wave: torch.Tensor, chunk_frames: int = 96000):
        """Per-channel mean and variance of conv layer 0's output over a whole clip [N] (GroupNorm models).

        GroupNorm with one group per channel normalises each channel over *all* frames of its input,
        the only non-local operation in the conv stack. Passing these clip statistics to
        :meth:`forward` makes a window's conv features identical to the single-pass ones. Runs
        layer 0 in chunks (its frames are 5 samples apart), so memory stays flat for long audio.
        """
        conv = self.feature_extractor.conv_layers[0].conv
        k, s = conv.kernel_size[0], conv.stride[0]
        total = (wave.shape[-1] - k) // s + 1
        acc = torch.zeros(2, conv.out_channels, dtype=torch.float64, device=wave.device)
        for f0 in range(0, total, chunk_frames):
            f1 = min(total, f0 + chunk_frames)
            y = conv(wave[f0 * s: (f1 - 1) * s + k][None, None].to(conv.weight.dtype))[0].double()
            acc[0] += y.sum(dim=1)
            acc[1] += (y * y).sum(dim=1)
        mean = acc[0] / total
        var = (acc[1] / total - mean * mean).clamp_min(0)
        return mean.float(), var.float()

    def forward(self, input_values: torch.Tensor, output_hidden_states: bool = False,
                apply_lm_head: bool = True, conv_norm_stats=None) -> EncoderOutput:
        """[B, N] samples -> EncoderOutput.

        ``hidden_states`` (when asked) follows Hugging Face's classic convention and ComfyUI's
        ``encoded_audio_all_layers``: entry i is the input of layer i (after the positional
        conv, and after ``encoder.layer_norm`` in post-LN models), the last entry is the final
        output (after ``encoder.layer_norm`` in stable-LN models): L+1 entries.

        ``conv_norm_stats``: (mean [C], var [C]) from :meth:`conv_norm_stats` to use the whole clip's
        GroupNorm statistics (GroupNorm models only; ignored by LayerNorm conv stacks).
        """
        if input_values.dim() == 1:
            input_values = input_values[None]
        x = self.feature_extractor(input_values, conv_norm_stats).transpose(1, 2)
        x = self.feature_projection(x)
        x, states = self.encoder(x, output_hidden_states)
        logits = self.lm_head(x) if (apply_lm_head and self.lm_head is not None) else None
        return EncoderOutput(x, states, logits)
