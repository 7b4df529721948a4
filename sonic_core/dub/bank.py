"""An exemplar bank: the person's own mouths, cut from their video in a face-aligned frame.

Each exemplar is the lower face of one video frame resampled into the canonical frame
(`shape.ShapeModel`), with its warp points and its mouth descriptor. Frames are chosen to
cover the mouth shapes the video shows (opening x width x head pose), evenly rather than
by how often each shape occurs. An output frame then takes the few exemplars nearest to the
mouth it needs (`select`), with weights smoothed over time so the choice does not flicker.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import shape as sh

BANK_SIZE = 384  # exemplars kept (each a few tens of kB)
BIN = np.array([0.025, 0.04, 0.12, 0.12])  # descriptor cells that the choice spreads over
MAX_CROP = 256  # the canonical crop's long side, pixels (the video's own resolution if smaller)
CANDIDATES = 6  # exemplars nearest in shape, among which the frame's own look decides ...
TOP_K = 2  # ... the ones blended per output frame
AGREEMENT = 0.03  # skin around the mouth this much further (mean 0..1) from the frame than the best halves a weight
SMOOTH_S = 0.06  # sigma of the temporal smoothing of the exemplar weights, seconds


@dataclass
class CanonicalWindow:
    """The lower-face window of the canonical frame and its pixel grid."""

    x0: float  # canonical units of the crop's top-left corner
    y0: float
    ppu: float  # crop pixels per canonical unit
    width: int
    height: int

    @classmethod
    def of(cls, model: sh.ShapeModel, face_px: float) -> CanonicalWindow:
        """Around the pasted region of the template, with room for the widest opening;
        `face_px`: the video's typical eye-corner distance in pixels (no upsampling past it)."""
        region = model.template[list(sh.REGION)]
        chin_drop = np.abs(model.basis[0, :sh.MOVING, 1]).max() * max(model.open_q95, 0.15) * 1.5
        lo = region.min(0) - 0.18
        hi = region.max(0) + np.array([0.18, 0.18 + chin_drop])
        span = hi - lo
        ppu = min(float(face_px), MAX_CROP / float(span.max()))
        return cls(float(lo[0]), float(lo[1]), ppu, int(np.ceil(span[0] * ppu)), int(np.ceil(span[1] * ppu)))

    def to_pixels(self, canon: np.ndarray) -> np.ndarray:
        return ((canon - np.array([self.x0, self.y0])) * self.ppu - 0.5).astype(np.float32)


@dataclass
class ExemplarBank:
    crops: torch.Tensor  # [M,3,h,w] float 0..1 on the compositing device
    points: torch.Tensor  # [M,W,2] warp points in crop pixels
    descriptors: np.ndarray  # [M,4] (shape.DESCRIPTOR)
    frame_index: np.ndarray  # [M] the video frame each came from
    window: CanonicalWindow
    zone: torch.Tensor  # [h,w] bool: where an exemplar must look like the frame it goes into
    _zone_pixels: torch.Tensor | None = None  # crops[:, :, zone], made on first use

    def agree(self, frames: torch.Tensor, to_canon: np.ndarray, idx: np.ndarray, w: np.ndarray,
              k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
        """Among the candidates idx [B,C] (weights w) of frames [B,H,W,3] uint8 (similarities to
        the canonical frame `to_canon` [B,2,3]), keep the k whose skin around the mouth looks
        most like the frame's: an exemplar with a hand or a shadow on it loses to one without."""
        own = canonical_crops(frames, to_canon, self.window)[:, :, self.zone]  # [B,3,P]
        if self._zone_pixels is None:
            self._zone_pixels = self.crops[:, :, self.zone]  # [M,3,P]
        cand = self._zone_pixels[torch.as_tensor(idx, device=self.crops.device)]  # [B,C,3,P]
        diff = cand - own[:, None]
        diff = diff - diff.mean(-1, keepdim=True)  # overall brightness is matched later
        r = diff.abs().clamp(max=0.3).mean((2, 3)).cpu().numpy()
        score = w * np.exp2(-((r - r.min(1, keepdims=True)) / AGREEMENT) ** 2)
        top = np.argsort(-score, axis=1)[:, :k]
        s = np.take_along_axis(score, top, 1)
        return np.take_along_axis(idx, top, 1), (s / np.maximum(s.sum(1, keepdims=True), 1e-12)).astype(np.float32)

    @property
    def size(self) -> int:
        return int(self.descriptors.shape[0])

    def select(self, want: np.ndarray, fps: float, k: int = CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
        """Exemplars for each wanted descriptor [N,4]: indices [N,k] and weights [N,k] (sum 1)."""
        from scipy.ndimage import gaussian_filter1d

        k = min(k, self.size)
        d2 = ((((want[:, None, :] - self.descriptors[None]) * sh.MATCH_WEIGHTS) ** 2).sum(-1))
        near = np.sqrt(np.partition(d2, k - 1, axis=1)[:, :k].max(1))
        scale = max(float(np.median(near)), 0.01)  # the bank's own spacing sets how soft the choice is
        score = np.exp(-d2 / (2 * scale ** 2)).astype(np.float32)
        if len(want) > 1:
            score = gaussian_filter1d(score, SMOOTH_S * fps, axis=0, mode="nearest")
        idx = np.argpartition(-score, k - 1, axis=1)[:, :k]
        w = np.take_along_axis(score, idx, 1)
        w = np.where(w.sum(1, keepdims=True) > 0, w, 1.0)
        return idx, (w / w.sum(1, keepdims=True)).astype(np.float32)


def choose_frames(descriptors: np.ndarray, usable: np.ndarray, size: int = BANK_SIZE) -> np.ndarray:
    """Frame indices for the bank: round-robin over occupied descriptor cells, in each cell the
    frames nearest its centre first, so rare shapes (wide open, turned) are kept."""
    cand = np.flatnonzero(usable)
    if len(cand) <= size:
        return cand
    cells = np.floor(descriptors[cand] / BIN).astype(np.int64)
    _, cell_id = np.unique(cells, axis=0, return_inverse=True)
    cell_id = cell_id.reshape(-1)
    queues = []
    for c in range(cell_id.max() + 1):
        members = cand[cell_id == c]
        centre = descriptors[members].mean(0)
        order = np.argsort((((descriptors[members] - centre) / BIN) ** 2).sum(1))
        queues.append(list(members[order]))
    chosen: list[int] = []
    while len(chosen) < size:
        for q in queues:
            if q and len(chosen) < size:
                chosen.append(int(q.pop(0)))
    return np.sort(np.asarray(chosen, np.int64))


def canonical_crops(frames: torch.Tensor, to_canon: np.ndarray, window: CanonicalWindow) -> torch.Tensor:
    """Resample frames [B,H,W,3] uint8 into the canonical window: [B,3,h,w] float 0..1."""
    H, W = frames.shape[1:3]
    dev = frames.device
    back = sh.invert(to_canon)  # canonical -> frame pixels
    u = (torch.arange(window.width, device=dev, dtype=torch.float32) + 0.5) / window.ppu + window.x0
    v = (torch.arange(window.height, device=dev, dtype=torch.float32) + 0.5) / window.ppu + window.y0
    gy, gx = torch.meshgrid(v, u, indexing="ij")
    # Only the box each frame's window covers is made float (frames may be 4K).
    corners = np.array([[window.x0, window.y0], [window.x0 + window.width / window.ppu, window.y0],
                        [window.x0, window.y0 + window.height / window.ppu],
                        [window.x0 + window.width / window.ppu, window.y0 + window.height / window.ppu]])
    seen = sh.apply(back, corners)  # [B,4,2] frame pixels
    lo = np.clip(np.floor(seen.min(1)) - 2, 0, [W - 1, H - 1]).astype(np.int64)
    hi = np.clip(np.ceil(seen.max(1)) + 2, 1, [W, H]).astype(np.int64)
    bw, bh = int((hi - lo)[:, 0].max()), int((hi - lo)[:, 1].max())
    lo = np.minimum(lo, [W - bw, H - bh])
    part = torch.stack([frames[b, y:y + bh, x:x + bw] for b, (x, y) in enumerate(lo.tolist())])
    m = torch.as_tensor(back, dtype=torch.float32, device=dev)
    o = torch.as_tensor(lo, dtype=torch.float32, device=dev)
    x = m[:, 0, 0, None, None] * gx + m[:, 0, 1, None, None] * gy + (m[:, 0, 2] - o[:, 0])[:, None, None]
    y = m[:, 1, 0, None, None] * gx + m[:, 1, 1, None, None] * gy + (m[:, 1, 2] - o[:, 1])[:, None, None]
    grid = torch.stack([(x + 0.5) * (2.0 / bw) - 1.0, (y + 0.5) * (2.0 / bh) - 1.0], -1)
    img = part.permute(0, 3, 1, 2).float() / 255.0
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


def build_bank(read_frames, landmarks: np.ndarray, usable: np.ndarray, model: sh.ShapeModel,
               device: torch.device, size: int = BANK_SIZE) -> ExemplarBank:
    """The bank from frames `read_frames(indices) -> [n,H,W,3] uint8` and their tracked
    `landmarks` [N,468,2+]; only frames where `usable` is True are candidates."""
    desc = model.describe(landmarks)
    chosen = choose_frames(desc, usable, size)
    eye = np.linalg.norm(landmarks[usable][:, 263, :2] - landmarks[usable][:, 33, :2], axis=-1)
    window = CanonicalWindow.of(model, float(np.median(eye)))
    to_canon = model.to_canonical(landmarks[chosen])
    crops = []
    for s in range(0, len(chosen), 32):
        part = torch.from_numpy(read_frames(chosen[s:s + 32])).to(device)
        crops.append(canonical_crops(part, to_canon[s:s + 32], window))
    crops = torch.cat(crops)
    points = window.to_pixels(sh.apply(to_canon, landmarks[chosen][:, list(sh.WARP_POINTS), :2].astype(np.float64)))
    return ExemplarBank(crops, torch.as_tensor(points, device=device), desc[chosen], chosen, window,
                        _agreement_zone(points, window).to(device))


def _agreement_zone(points: np.ndarray, window: CanonicalWindow) -> torch.Tensor:
    """[h,w] bool: canonical pixels that show the same skin whatever the mouth does: the region
    minus the lips and the band under them, whose edge moves with the jaw."""
    yy, xx = np.mgrid[0:window.height, 0:window.width]
    lips = [sh.WARP_POINTS.index(i) for i in sh.OUTER]
    centre = np.median(points[:, lips], axis=(0, 1))
    mouth_w = float(np.median(np.ptp(points[:, lips, 0], axis=1)))
    zone = ((xx - centre[0]) ** 2 / (0.75 * mouth_w) ** 2 + (yy - centre[1]) ** 2 / (0.5 * mouth_w) ** 2) > 1.0
    zone &= ~((np.abs(xx - centre[0]) < 0.7 * mouth_w) & (yy > centre[1]))
    return torch.as_tensor(zone)
