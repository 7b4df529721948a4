"""RGB -> YUV 4:2:0 (BT.709, limited/"TV" range) in torch, on the frames' own device.

The encoder wants yuv420p. Doing the conversion where the frames already are (the GPU
for a GPU render) means only 1.5 bytes/pixel cross to the host instead of 3, and the
CPU (the bottleneck at 1024^2: x264 itself) is spared a swscale pass.

Matrix: ITU-R BT.709 (Kr = 0.2126, Kb = 0.0722), limited range: Y in 16..235, Cb/Cr in
16..240. Chroma is the 2x2 box average of each 2x2 block (averaging RGB first is exact
because the transform is linear). The stream is tagged bt709/tv so players decode it
with the same matrix.
"""
from __future__ import annotations

import numpy as np
import torch

KR, KB = 0.2126, 0.0722
KG = 1.0 - KR - KB

# Rows: Y, Cb, Cr (for R, G, B in 0..255), scaled for limited range.
_Y = np.array([KR, KG, KB]) * (219.0 / 255.0)
_CB = np.array([-KR, -KG, 1.0 - KB]) / (2.0 * (1.0 - KB)) * (224.0 / 255.0)
_CR = np.array([1.0 - KR, -KG, -KB]) / (2.0 * (1.0 - KR)) * (224.0 / 255.0)
RGB_TO_YCBCR = np.stack([_Y, _CB, _CR]).astype(np.float64)  # [3, 3]
OFFSETS = np.array([16.0, 128.0, 128.0])


def _as_tensor(frames) -> torch.Tensor:
    if isinstance(frames, torch.Tensor):
        t = frames
    else:
        t = torch.from_numpy(np.ascontiguousarray(frames))
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"frames must be [B, H, W, 3] (or [H, W, 3]) RGB, got shape {tuple(t.shape)}")
    if t.dtype != torch.uint8:
        if t.is_floating_point():  # 0..1 floats (ComfyUI IMAGE convention)
            t = (t.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)
        else:
            t = t.clamp(0, 255).to(torch.uint8)
    return t


def rgb_to_yuv420p(frames, out: torch.Tensor | None = None, batch: int | None = None) -> torch.Tensor:
    """Convert RGB frames to packed I420 planes on their device.

    frames: uint8 [B, H, W, 3] (torch on any device, or numpy); H and W even.
    Returns uint8 [B, H*W*3/2] on the same device: each row is Y (H*W), U (H/2*W/2),
    V (H/2*W/2) back to back, i.e. exactly ``VideoFrame.from_ndarray(row.reshape(H*3//2, W),
    format="yuv420p")``'s layout.
    batch: frames converted at once (bounds float temporaries; default 8 on CPU, 32 on GPU).
    """
    t = _as_tensor(frames)
    b, h, w, _ = t.shape
    if h % 2 or w % 2:
        raise ValueError(f"yuv420p needs even width and height, got {w}x{h}")
    n_y, n_c = h * w, (h // 2) * (w // 2)
    if out is None:
        out = torch.empty((b, n_y + 2 * n_c), dtype=torch.uint8, device=t.device)
    if b == 0:
        return out
    dev = t.device
    m = torch.tensor(RGB_TO_YCBCR, dtype=torch.float32, device=dev)
    step = batch or (8 if dev.type == "cpu" else 32)
    for s in range(0, b, step):
        x = t[s:s + step].to(torch.float32)  # [n, H, W, 3]
        n = x.shape[0]
        # Luma: dot with the Y row.
        y = torch.matmul(x, m[0])  # [n, H, W]
        y.add_(16.5).clamp_(0, 255)
        out[s:s + n, :n_y] = y.to(torch.uint8).reshape(n, n_y)
        # Chroma: 2x2 average of RGB, then the Cb/Cr rows.
        avg = x.reshape(n, h // 2, 2, w // 2, 2, 3).mean(dim=(2, 4))  # [n, H/2, W/2, 3]
        c = torch.matmul(avg, m[1:].T)  # [n, H/2, W/2, 2]
        c.add_(128.5).clamp_(0, 255)
        c = c.to(torch.uint8).permute(0, 3, 1, 2).reshape(n, 2 * n_c)  # U plane then V plane
        out[s:s + n, n_y:] = c
    return out


def yuv420p_to_rgb(planes, height: int, width: int) -> np.ndarray:
    """Reference inverse (numpy, nearest-neighbour chroma upsampling), for tests and debugging.

    planes: [B, H*W*3/2] or [H*W*3/2] uint8 packed I420. Returns [B, H, W, 3] uint8.
    """
    p = np.asarray(planes)
    if p.ndim == 1:
        p = p[None]
    n_y, n_c = height * width, (height // 2) * (width // 2)
    y = p[:, :n_y].reshape(-1, height, width).astype(np.float64) - 16.0
    u = p[:, n_y:n_y + n_c].reshape(-1, height // 2, width // 2).astype(np.float64) - 128.0
    v = p[:, n_y + n_c:].reshape(-1, height // 2, width // 2).astype(np.float64) - 128.0
    u = u.repeat(2, axis=1).repeat(2, axis=2)
    v = v.repeat(2, axis=1).repeat(2, axis=2)
    inv = np.linalg.inv(RGB_TO_YCBCR)
    ycc = np.stack([y, u, v], axis=-1)
    rgb = ycc @ inv.T
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
