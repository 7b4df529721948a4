"""A tiny TFLite-graph converter and PyTorch interpreter for MediaPipe's face models.

Why a generic interpreter instead of hand-written BlazeFace / FaceMesh classes: the three
MediaPipe graphs (short-range detector, full-range sparse detector, 468-point mesh) use
only a dozen builtin ops, and replaying the graph op by op reproduces TFLite's exact
padding, channel padding and head layout with no room for transcription mistakes.

Conversion (`convert_tflite`) runs once, when the model cache is built: it needs the pure
Python `tflite` flatbuffer parser, folds DEQUANTIZE (fp16 -> fp32) and DENSIFY (sparse ->
dense) into constants, re-lays-out convolution weights for PyTorch, and returns a JSON-able
op list plus float32 arrays. At run time `TFLiteGraph` only needs torch: activations stay
NCHW float32, so it runs batched on CPU or CUDA.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# TFLite enums (schema.fbs); spelled out so the runtime never imports `tflite`.
_PADDING = {0: "SAME", 1: "VALID"}
_ACTIVATION = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6"}
_SUPPORTED_OPS = {
    "ADD", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "MAX_POOL_2D",
    "PAD", "PRELU", "RELU", "RESHAPE", "RESIZE_BILINEAR",
}


# --------------------------------------------------------------------------- conversion
def _densify(tensor, values: np.ndarray, flatbuffer_module) -> np.ndarray:
    """Expand a TFLite sparse tensor (CSR per dimension, no block map) to a dense array.

    Follows TFLite's `FormatConverter::SparseToDense`: walk the dimensions in traversal
    order; a DENSE level enumerates `dense_size` indices, a SPARSE_CSR level enumerates the
    stored indices of the current segment.
    """
    tfl = flatbuffer_module
    sparsity = tensor.Sparsity()
    shape = [int(s) for s in tensor.ShapeAsNumpy()]
    order = [int(i) for i in sparsity.TraversalOrderAsNumpy()]
    if sparsity.BlockMapLength() or order != list(range(len(shape))):
        raise NotImplementedError("block-sparse / permuted TFLite tensors are not supported")

    vector_types = {1: tfl.Int32Vector, 2: tfl.Uint16Vector, 3: tfl.Uint8Vector}

    def read_vector(kind: int, table) -> np.ndarray:
        vec = vector_types[kind]()
        vec.Init(table.Bytes, table.Pos)
        return vec.ValuesAsNumpy().astype(np.int64)

    levels = []
    for d in range(sparsity.DimMetadataLength()):
        meta = sparsity.DimMetadata(d)
        if meta.Format() == 0:
            levels.append(("dense", int(meta.DenseSize()), None, None))
        else:
            segments = read_vector(meta.ArraySegmentsType(), meta.ArraySegments())
            indices = read_vector(meta.ArrayIndicesType(), meta.ArrayIndices())
            levels.append(("csr", 0, segments, indices))

    dense = np.zeros(shape, dtype=values.dtype)
    flat_values = values.reshape(-1)
    cursor = 0
    index = [0] * len(shape)

    def walk(level: int, parent: int) -> None:
        nonlocal cursor
        if level == len(levels):
            dense[tuple(index)] = flat_values[cursor]
            cursor += 1
            return
        kind, size, segments, indices = levels[level]
        if kind == "dense":
            for i in range(size):
                index[level] = i
                walk(level + 1, parent * size + i)
        else:
            for k in range(int(segments[parent]), int(segments[parent + 1])):
                index[level] = int(indices[k])
                walk(level + 1, k)

    walk(0, 0)
    if cursor != flat_values.size:
        raise ValueError("sparse tensor metadata does not match its value count")
    return dense


def convert_tflite(model_bytes: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse a .tflite flatbuffer into (graph spec, float32 constants).

    The graph spec is JSON-serialisable: input/output tensor ids, input shape (NHWC as in
    TFLite) and an op list. Constants are keyed "c<tensor id>" and already in PyTorch layout
    (conv weights OIHW, depthwise [C,1,kh,kw], PReLU alpha [C]).
    """
    import tflite  # conversion-time only dependency

    model = tflite.Model.GetRootAsModel(model_bytes, 0)
    if model.SubgraphsLength() != 1:
        raise ValueError("expected a single-subgraph TFLite model")
    graph = model.Subgraphs(0)
    op_names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    np_types = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64}

    def raw_array(tid: int) -> np.ndarray | None:
        tensor = graph.Tensors(tid)
        buf = model.Buffers(tensor.Buffer())
        if buf is None or buf.DataLength() == 0:
            return None
        data = buf.DataAsNumpy().tobytes()
        arr = np.frombuffer(data, dtype=np_types[tensor.Type()])
        if tensor.Sparsity() is not None:
            return _densify(tensor, arr, tflite)
        shape = [int(s) for s in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
        return arr.reshape(shape).copy()

    consts: dict[int, np.ndarray] = {}
    for tid in range(graph.TensorsLength()):
        arr = raw_array(tid)
        if arr is not None:
            consts[tid] = arr

    def options(op, cls):
        table = op.BuiltinOptions()
        opt = cls()
        opt.Init(table.Bytes, table.Pos)
        return opt

    ops: list[dict[str, Any]] = []
    out_consts: dict[str, np.ndarray] = {}
    roles: dict[str, str] = {}

    def add_const(tid: int, role: str) -> str:
        key = f"c{tid}"
        arr = consts[tid].astype(np.float32)
        if role == "conv":  # TFLite [O, kh, kw, I] -> torch [O, I, kh, kw]
            arr = arr.transpose(0, 3, 1, 2)
        elif role == "depthwise":  # TFLite [1, kh, kw, C] -> torch [C, 1, kh, kw]
            arr = arr.transpose(3, 0, 1, 2)
        elif role in ("bias", "alpha"):
            arr = arr.reshape(-1)
        if roles.setdefault(key, role) != role:
            raise ValueError(f"constant {key} used in two layouts")
        out_consts[key] = np.ascontiguousarray(arr)
        return key

    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        ins = [int(op.Inputs(j)) for j in range(op.InputsLength())]
        outs = [int(op.Outputs(j)) for j in range(op.OutputsLength())]
        if name in ("DEQUANTIZE", "DENSIFY"):  # constant folding
            consts[outs[0]] = consts[ins[0]].astype(np.float32 if name == "DEQUANTIZE" else consts[ins[0]].dtype)
            continue
        if name not in _SUPPORTED_OPS:
            raise NotImplementedError(f"TFLite op {name} is not supported by the interpreter")
        spec: dict[str, Any] = {"op": name, "out": outs[0]}
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            opt = options(op, tflite.Conv2DOptions if name == "CONV_2D" else tflite.DepthwiseConv2DOptions)
            spec.update(
                x=ins[0],
                weight=add_const(ins[1], "conv" if name == "CONV_2D" else "depthwise"),
                bias=add_const(ins[2], "bias") if len(ins) > 2 and ins[2] >= 0 else None,
                stride=[opt.StrideH(), opt.StrideW()],
                dilation=[opt.DilationHFactor(), opt.DilationWFactor()],
                padding=_PADDING[opt.Padding()],
                act=_ACTIVATION[opt.FusedActivationFunction()],
            )
            if name == "DEPTHWISE_CONV_2D" and opt.DepthMultiplier() not in (0, 1):
                raise NotImplementedError("depth_multiplier > 1")
        elif name == "MAX_POOL_2D":
            opt = options(op, tflite.Pool2DOptions)
            spec.update(
                x=ins[0], kernel=[opt.FilterHeight(), opt.FilterWidth()],
                stride=[opt.StrideH(), opt.StrideW()], padding=_PADDING[opt.Padding()],
                act=_ACTIVATION[opt.FusedActivationFunction()],
            )
        elif name == "ADD":
            opt = options(op, tflite.AddOptions)
            if any(t in consts for t in ins):
                raise NotImplementedError("ADD with a constant operand")
            spec.update(a=ins[0], b=ins[1], act=_ACTIVATION[opt.FusedActivationFunction()])
        elif name == "PRELU":
            spec.update(x=ins[0], alpha=add_const(ins[1], "alpha"))
        elif name == "RELU":
            spec.update(x=ins[0])
        elif name == "PAD":
            spec.update(x=ins[0], paddings=consts[ins[1]].astype(int).tolist())
        elif name == "CONCATENATION":
            opt = options(op, tflite.ConcatenationOptions)
            spec.update(xs=ins, axis=opt.Axis(), act=_ACTIVATION[opt.FusedActivationFunction()])
        elif name == "RESHAPE":
            shape = consts[ins[1]].astype(int).tolist() if len(ins) > 1 and ins[1] in consts else None
            if shape is None:
                shape = [int(s) for s in graph.Tensors(outs[0]).ShapeAsNumpy()]
            spec.update(x=ins[0], shape=shape)
        elif name == "RESIZE_BILINEAR":
            opt = options(op, tflite.ResizeBilinearOptions)
            spec.update(
                x=ins[0], size=consts[ins[1]].astype(int).tolist(),
                align_corners=bool(opt.AlignCorners()), half_pixel_centers=bool(opt.HalfPixelCenters()),
            )
        elif name == "DEPTH_TO_SPACE":
            opt = options(op, tflite.DepthToSpaceOptions)
            spec.update(x=ins[0], block=opt.BlockSize())
        ops.append(spec)

    in_id = int(graph.Inputs(0))
    spec_graph = {
        "input": in_id,
        "input_shape": [int(s) for s in graph.Tensors(in_id).ShapeAsNumpy()],
        "outputs": [int(graph.Outputs(j)) for j in range(graph.OutputsLength())],
        "output_names": [graph.Tensors(graph.Outputs(j)).Name().decode() for j in range(graph.OutputsLength())],
        "ops": ops,
    }
    return spec_graph, out_consts


# --------------------------------------------------------------------------- runtime
def _op_inputs(op: dict[str, Any]) -> list[int]:
    """Activation tensor ids an op reads (constants are referenced by name, not id)."""
    ids = [op[k] for k in ("x", "a", "b") if k in op]
    return ids + list(op.get("xs", []))


def _activate(x: torch.Tensor, act: str | None) -> torch.Tensor:
    if act is None:
        return x
    if act == "RELU":
        return F.relu(x)
    if act == "RELU6":
        return x.clamp(0.0, 6.0)
    if act == "RELU_N1_TO_1":
        return x.clamp(-1.0, 1.0)
    raise NotImplementedError(act)


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow SAME padding: the odd pixel goes to the bottom/right."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _nhwc_axis(axis: int) -> int:
    """Map an NHWC axis of a rank-4 tensor to our NCHW storage."""
    return {0: 0, 1: 2, 2: 3, 3: 1}[axis % 4]


class TFLiteGraph(nn.Module):
    """Replays a converted TFLite graph in PyTorch.

    Input: float32 NCHW batch (the TFLite model's NHWC input, transposed). Output: the
    graph's output tensors, rank-4 ones returned NHWC like TFLite so head layouts match.
    """

    def __init__(self, spec: dict[str, Any], constants: dict[str, torch.Tensor]):
        super().__init__()
        self.spec = spec
        for key in {v for op in spec["ops"] for k, v in op.items() if k in ("weight", "bias", "alpha") and v}:
            self.register_buffer(key, constants[key].to(torch.float32).contiguous())
        # Free each activation after its last reader, so a big batch (e.g. many detector
        # tiles) holds a few feature maps at a time rather than all of them.
        last_use: dict[int, int] = {}
        for i, op in enumerate(spec["ops"]):
            for tid in _op_inputs(op):
                last_use[tid] = i
        keep = set(spec["outputs"])
        self._release = [[t for t in _op_inputs(op) if last_use[t] == i and t not in keep]
                         for i, op in enumerate(spec["ops"])]

    @property
    def input_size(self) -> tuple[int, int]:
        _, h, w, _ = self.spec["input_shape"]
        return h, w

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        values: dict[int, torch.Tensor] = {self.spec["input"]: x}
        for op, release in zip(self.spec["ops"], self._release):
            values[op["out"]] = self._run(op, values)
            for tid in release:
                values.pop(tid, None)
        outs = []
        for tid in self.spec["outputs"]:
            v = values[tid]
            outs.append(v.permute(0, 2, 3, 1) if v.dim() == 4 else v)
        return outs

    def _run(self, op: dict[str, Any], values: dict[int, torch.Tensor]) -> torch.Tensor:
        kind = op["op"]
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            x = values[op["x"]]
            weight = getattr(self, op["weight"])
            bias = getattr(self, op["bias"]) if op["bias"] else None
            kh, kw = weight.shape[-2:]
            if op["padding"] == "SAME":
                pt, pb = _same_pad(x.shape[2], kh, op["stride"][0], op["dilation"][0])
                pl, pr = _same_pad(x.shape[3], kw, op["stride"][1], op["dilation"][1])
                if pt or pb or pl or pr:
                    x = F.pad(x, (pl, pr, pt, pb))
            groups = x.shape[1] if kind == "DEPTHWISE_CONV_2D" else 1
            y = F.conv2d(x, weight, bias, stride=op["stride"], dilation=op["dilation"], groups=groups)
            return _activate(y, op["act"])
        if kind == "ADD":
            return _activate(values[op["a"]] + values[op["b"]], op["act"])
        if kind == "PRELU":
            x = values[op["x"]]
            alpha = getattr(self, op["alpha"]).view(1, -1, 1, 1)
            return torch.where(x >= 0, x, x * alpha)
        if kind == "RELU":
            return F.relu(values[op["x"]])
        if kind == "PAD":
            x = values[op["x"]]
            p = op["paddings"]
            if x.dim() != 4 or p[0] != [0, 0]:
                raise NotImplementedError("PAD only on rank-4 tensors, not on the batch axis")
            return F.pad(x, (p[2][0], p[2][1], p[1][0], p[1][1], p[3][0], p[3][1]))
        if kind == "MAX_POOL_2D":
            x = values[op["x"]]
            kh, kw = op["kernel"]
            if op["padding"] == "SAME":
                pt, pb = _same_pad(x.shape[2], kh, op["stride"][0], 1)
                pl, pr = _same_pad(x.shape[3], kw, op["stride"][1], 1)
                if pt or pb or pl or pr:
                    x = F.pad(x, (pl, pr, pt, pb), value=float("-inf"))
            return _activate(F.max_pool2d(x, (kh, kw), op["stride"]), op["act"])
        if kind == "CONCATENATION":
            xs = [values[t] for t in op["xs"]]
            axis = _nhwc_axis(op["axis"]) if xs[0].dim() == 4 else op["axis"]
            return _activate(torch.cat(xs, dim=axis), op["act"])
        if kind == "RESHAPE":
            x = values[op["x"]]
            if x.dim() == 4:
                x = x.permute(0, 2, 3, 1)
            shape = list(op["shape"])
            shape[0] = x.shape[0]  # graphs are exported with batch 1; keep ours
            y = x.reshape(shape)
            return y.permute(0, 3, 1, 2) if y.dim() == 4 else y
        if kind == "RESIZE_BILINEAR":
            x = values[op["x"]]
            if op["align_corners"]:
                return F.interpolate(x, size=op["size"], mode="bilinear", align_corners=True)
            if op["half_pixel_centers"]:
                return F.interpolate(x, size=op["size"], mode="bilinear", align_corners=False)
            return _resize_bilinear_legacy(x, op["size"])
        if kind == "DEPTH_TO_SPACE":
            x = values[op["x"]]
            b, c, h, w = x.shape
            r = op["block"]
            # TF channel order is (row offset, col offset, out channel).
            y = x.view(b, r, r, c // (r * r), h, w).permute(0, 3, 4, 1, 5, 2)
            return y.reshape(b, c // (r * r), h * r, w * r)
        raise NotImplementedError(kind)


def _resize_bilinear_legacy(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """TF1 bilinear resize (no half-pixel centres, no corner alignment): src = dst * in/out."""
    out_h, out_w = size
    in_h, in_w = x.shape[-2:]

    def axis(n_out: int, n_in: int):
        src = torch.arange(n_out, device=x.device, dtype=torch.float32) * (n_in / n_out)
        i0 = src.floor().clamp(max=n_in - 1).long()
        i1 = (i0 + 1).clamp(max=n_in - 1)
        return i0, i1, (src - i0.float()).clamp(0, 1)

    y0, y1, fy = axis(out_h, in_h)
    x0, x1, fx = axis(out_w, in_w)
    top = x[..., y0, :]
    bot = x[..., y1, :]
    rows = top + (bot - top) * fy.view(-1, 1)
    left = rows[..., x0]
    right = rows[..., x1]
    return left + (right - left) * fx
