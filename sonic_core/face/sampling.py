"""Rotated-rectangle crops that match MediaPipe's ImageToTensorCalculator, batched in torch.

Coordinates are MediaPipe's: a point is `normalized * image_size`, and a ROI is
(center_x, center_y, width, height, rotation) in those pixels, rotation in radians
(positive = clockwise on screen, since y points down). MediaPipe (CPU) builds a perspective
transform that sends the ROI's corners to the output tensor's corners (0 and S) and runs
cv::warpPerspective with bilinear sampling, i.e. output index u samples input index
c + R(theta) * ((u / S - 0.5) * w, ...). We reproduce exactly that with grid_sample.

MediaPipe samples without any low-pass filter; a face that is many times larger than the
192-pixel model input then aliases. `prefilter` optionally box-averages the input by an
integer factor k first (keeping the same geometry), which only matters when the ROI is
much larger than the output.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def roi_grid(rois: torch.Tensor, out_size: int) -> torch.Tensor:
    """Input-pixel (index) coordinates sampled by each output pixel: [N, S, S, 2] (x, y)."""
    device, dtype = rois.device, rois.dtype
    u = torch.arange(out_size, device=device, dtype=dtype) / out_size - 0.5
    cx, cy, w, h, theta = (rois[:, i].view(-1, 1, 1) for i in range(5))
    du = (u.view(1, 1, -1) * w)  # along output x
    dv = (u.view(1, -1, 1) * h)  # along output y
    cos, sin = torch.cos(theta), torch.sin(theta)
    x = cx + cos * du - sin * dv
    y = cy + sin * du + cos * dv
    return torch.stack([x, y], dim=-1)


def prefilter_factor(roi_size: float, out_size: int, threshold: float) -> int:
    """Integer box-filter factor for a ROI of `roi_size` pixels sampled to `out_size`.

    1 (no filter, MediaPipe-exact) while the downscale is below `threshold`; above it, the
    largest k that keeps the remaining bilinear downscale >= 1.
    """
    scale = roi_size / out_size
    if scale < threshold:
        return 1
    return max(1, int(math.floor(scale)))


def _reduce(img: torch.Tensor, k: int) -> torch.Tensor:
    return img if k == 1 else F.avg_pool2d(img, k, k, ceil_mode=True)


def sample_rois(images: torch.Tensor, rois: torch.Tensor, out_size: int, border: str = "replicate",
                prefilter: int = 1) -> torch.Tensor:
    """Crop ROIs from images: images [N, C, H, W] (or [1, C, H, W] shared by all ROIs) float,
    rois [N, 5] -> [N, C, S, S].

    border: "replicate" (MediaPipe's default, used for the landmark crop) or "zero" (the
    detector's letterbox). prefilter: integer box-average factor applied first.
    """
    grid = roi_grid(rois.to(images.dtype), out_size)
    shared = images.shape[0] == 1 and rois.shape[0] != 1
    if shared:  # one image, many ROIs: stack the grids so the image is filtered/sampled once
        grid = grid.reshape(1, -1, out_size, 2)
    src = _reduce(images, prefilter)
    if prefilter != 1:  # original index x <-> reduced index (x - (k - 1) / 2) / k
        grid = (grid - (prefilter - 1) / 2.0) / prefilter
    h, w = src.shape[-2:]
    norm = torch.stack([(grid[..., 0] + 0.5) * (2.0 / w) - 1.0, (grid[..., 1] + 0.5) * (2.0 / h) - 1.0], dim=-1)
    mode = "border" if border == "replicate" else "zeros"
    out = F.grid_sample(src, norm, mode="bilinear", padding_mode=mode, align_corners=False)
    if shared:
        out = out.reshape(images.shape[1], rois.shape[0], out_size, out_size).transpose(0, 1)
    return out


def roi_bounds(rois: np.ndarray, k: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Pixel box x0, y0, x1, y1 (clipped to the image) holding every pixel that sampling the
    ROIs [N, 5] reads, with margin for bilinear taps and the k x k box filter. x0, y0 are
    multiples of k, so filter blocks sit on the image's own grid and a patch cut at these
    bounds gives exactly the same crops as the whole image.
    """
    cx, cy, w, h, theta = (rois[:, i] for i in range(5))
    half_x = 0.5 * (np.abs(w * np.cos(theta)) + np.abs(h * np.sin(theta)))
    half_y = 0.5 * (np.abs(w * np.sin(theta)) + np.abs(h * np.cos(theta)))
    pad = 2 + k
    x0 = int(np.clip(math.floor((cx - half_x).min()) - pad, 0, width - 1))
    y0 = int(np.clip(math.floor((cy - half_y).min()) - pad, 0, height - 1))
    x1 = int(np.clip(math.ceil((cx + half_x).max()) + pad + 1, x0 + 1, width))
    y1 = int(np.clip(math.ceil((cy + half_y).max()) + pad + 1, y0 + 1, height))
    return (x0 // k) * k, (y0 // k) * k, x1, y1


def sample_rois_from_array(image: np.ndarray, rois: np.ndarray, out_size: int, border: str,
                           prefilter_threshold: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Like `sample_rois` for one HxWx3 uint8 image, touching only the pixels the ROIs need.

    Each ROI's bounding box is cut out of the (possibly huge) image first, so memory scales
    with the ROI, not with the photo. Returns [N, 3, S, S] float32 in 0..255.
    """
    height, width = image.shape[:2]
    out = []
    for roi in np.asarray(rois, dtype=np.float64).reshape(-1, 5):
        cx, cy, w, h, theta = roi
        k = prefilter_factor(max(w, h), out_size, prefilter_threshold)
        x0, y0, x1, y1 = roi_bounds(roi[None], k, height, width)
        if border == "zero":  # zero padding must see the true image edge: keep the whole image
            x0, y0, x1, y1 = 0, 0, width, height
        patch = torch.from_numpy(np.ascontiguousarray(image[y0:y1, x0:x1])).to(device)
        patch = patch.permute(2, 0, 1).unsqueeze(0).float()
        local = torch.tensor([[cx - x0, cy - y0, w, h, theta]], dtype=torch.float32, device=device)
        out.append(sample_rois(patch, local, out_size, border=border, prefilter=k))
    return torch.cat(out, dim=0) if out else torch.zeros(0, 3, out_size, out_size, device=device)
