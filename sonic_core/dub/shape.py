"""Mouth shape in a video: landmarks in a face-aligned frame, and what describes a lip shape.

Every tracked frame is brought into one canonical frame by a similarity transform fitted on
points the jaw and lips do not move (eye corners, nose bridge). There a mouth is described by
a few numbers in the motion track's own units (`types.MotionTrack`): the lips' opening and
the mouth's width change; plus the head's yaw and pitch, so that a mouth is taken from a frame
seen from about the same side. A per-video linear model says how each lower-face point moves
with opening and width, which turns a motion track into target lip and chin contours.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Points the mouth and jaw never move: eye corners, the nose bridge and ridge.
STABLE = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 10, 151, 9)
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
        78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415)
CHIN = (152, 148, 176, 149, 150, 136, 172, 377, 400, 378, 379, 365, 397, 199, 175, 200, 18, 83, 313,
        201, 421, 208, 428, 32, 262, 171, 396, 140, 369)
# The frame keeps these where they are: the seam of the pasted region runs near them.
ANCHORS = (98, 327, 2, 164, 167, 393, 92, 322, 206, 426, 205, 425, 207, 427, 187, 411, 192, 416, 214, 434,
           58, 288, 132, 361, 123, 352, 50, 280, 129, 358, 203, 423)
WARP_POINTS = LIPS + CHIN + ANCHORS  # the correspondences of the mouth warp
MOVING = len(LIPS) + len(CHIN)  # the first MOVING warp points follow the target mouth
# The pasted region: the hull of these, grown by a margin (below the nose to under the chin).
REGION = (98, 327, 205, 425, 187, 411, 58, 288, 172, 397, 136, 365, 150, 379, 149, 378, 176, 400, 148,
          377, 152, 2, 129, 358)
CHIN_EDGE = (152, 148, 377, 176, 400, 149, 378)  # the chin's lower edge: the region extends below it
INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
# The mouth's descriptor: opening (motion-track units), width change, yaw, pitch; weights of
# their differences when a mouth is matched (yaw and pitch are proxies, ~1 at 45 degrees).
DESCRIPTOR = ("open", "width", "yaw", "pitch")
MATCH_WEIGHTS = np.array([1.0, 0.6, 0.35, 0.35], np.float32)
PUCKER_NARROWING = 0.3  # the rig's pucker field narrows the mouth by this share (render/fields.py)
TUCK_CLOSING = 0.07  # and lip tuck lifts the lower lip by this many mouth widths


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity [..., 2, 3] taking points src [..., K, 2] onto dst [K, 2] (Umeyama)."""
    mu_s, mu_d = src.mean(-2, keepdims=True), dst.mean(-2, keepdims=True)
    a, b = src - mu_s, dst - mu_d
    # complex form: z_dst = c * z_src + t with c = sum(conj(a) b) / sum(|a|^2)
    za = a[..., 0] + 1j * a[..., 1]
    zb = b[..., 0] + 1j * b[..., 1]
    c = (np.conj(za) * zb).sum(-1) / np.maximum((np.abs(za) ** 2).sum(-1), 1e-9)
    m = np.zeros(src.shape[:-2] + (2, 3))
    m[..., 0, 0], m[..., 0, 1] = c.real, -c.imag
    m[..., 1, 0], m[..., 1, 1] = c.imag, c.real
    t = mu_d[..., 0, :] - np.einsum("...ij,...j->...i", m[..., :, :2], mu_s[..., 0, :])
    m[..., :, 2] = t
    return m


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Affine [..., 2, 3] applied to points [..., K, 2]."""
    return np.einsum("...ij,...kj->...ki", m[..., :, :2], pts) + m[..., None, :, 2]


def invert(m: np.ndarray) -> np.ndarray:
    a = np.linalg.inv(m[..., :, :2])
    out = np.zeros_like(m)
    out[..., :, :2] = a
    out[..., :, 2] = -np.einsum("...ij,...j->...i", a, m[..., :, 2])
    return out


def describe(canon: np.ndarray, neutral_width: float) -> np.ndarray:
    """Descriptors [..., 4] of canonical landmarks [..., 468, 2+] (see DESCRIPTOR)."""
    with np.errstate(invalid="ignore", divide="ignore"):  # frames without a face (all zeros) give NaN
        return _describe(canon[..., :2], neutral_width)


def _describe(p: np.ndarray, neutral_width: float) -> np.ndarray:
    width = np.linalg.norm(p[..., 291, :] - p[..., 61, :], axis=-1)
    gap = np.maximum(0.0, (p[..., 14, 1] - p[..., 13, 1]))
    eye_mid = (p[..., 33, :] + p[..., 263, :]) / 2
    eye_half = np.linalg.norm(p[..., 263, :] - p[..., 33, :], axis=-1) / 2
    # Yaw: where the nose tip sits between the eyes; pitch: the nose tip's height against the
    # eye-to-mouth span (both are 0 for this video's typical pose once centred).
    yaw = (p[..., 1, 0] - eye_mid[..., 0]) / eye_half
    mouth_mid = (p[..., 13, :] + p[..., 14, :]) / 2
    pitch = (p[..., 1, 1] - eye_mid[..., 1]) / np.maximum(mouth_mid[..., 1] - eye_mid[..., 1], 1e-6)
    return np.stack([gap / np.maximum(width, 1e-6), width / neutral_width - 1.0, yaw, pitch], -1).astype(np.float32)


@dataclass
class ShapeModel:
    """One person's mouth in the canonical frame, fitted on the frames of their video."""

    template: np.ndarray  # [468,2] mean canonical landmarks (canonical units: eye corner to eye corner = 1)
    neutral_width: float  # canonical mouth width with the lips closed
    pose_centre: np.ndarray  # [2] median yaw and pitch proxies (descriptors are centred on them)
    basis: np.ndarray  # [2, W, 2]: canonical displacement of each warp point per unit of opening / width
    open_q95: float  # 95th percentile of the lips' opening in the video

    @classmethod
    def fit(cls, landmarks: np.ndarray) -> ShapeModel:
        """From tracked landmarks [N,468,2+] of the frames that show the face (N >= 1)."""
        lm = np.asarray(landmarks, np.float64)[..., :2]
        ref = lm[0, STABLE]
        for _ in range(3):  # Procrustes: align all to the mean of the aligned
            m = similarity(lm[:, STABLE], ref)
            canon = apply(m, lm)
            ref = canon[:, STABLE].mean(0)
        # Canonical units: outer eye corners 1 apart, the mean face upright and centred.
        template = canon.mean(0)
        unit = similarity(template[None, [33, 263]], np.array([[-0.5, 0.0], [0.5, 0.0]]))[0]
        canon = apply(unit, canon)
        template = canon.mean(0)
        width = np.linalg.norm(canon[:, 291] - canon[:, 61], axis=-1)
        gap = np.maximum(0.0, canon[:, 14, 1] - canon[:, 13, 1]) / np.maximum(width, 1e-6)
        closed = gap < max(0.02, np.quantile(gap, 0.2))
        neutral = float(np.median(width[closed])) if closed.any() else float(np.median(width))
        d = describe(canon, neutral)
        pose_centre = np.median(d[:, 2:], axis=0)
        # How the warp points move with opening and width: least squares over the video.
        x = np.stack([d[:, 0], d[:, 1]], 1).astype(np.float64)
        x = np.concatenate([x - x.mean(0), np.ones((len(x), 1))], 1)
        y = canon[:, list(WARP_POINTS)].reshape(len(x), -1)
        coef, *_ = np.linalg.lstsq(x, y - y.mean(0), rcond=None)
        basis = coef[:2].reshape(2, len(WARP_POINTS), 2)
        basis[:, MOVING:] = 0.0  # anchors stay where the frame has them
        return cls(template.astype(np.float32), neutral, pose_centre.astype(np.float32), basis.astype(np.float32),
                   float(np.quantile(d[:, 0], 0.95)))

    def to_canonical(self, landmarks: np.ndarray) -> np.ndarray:
        """Similarity transforms [..., 2, 3] taking frame landmarks [..., 468, 2+] to canonical units."""
        lm = np.asarray(landmarks, np.float64)[..., :2]
        return similarity(lm[..., STABLE, :], self.template[list(STABLE)].astype(np.float64))

    def describe(self, landmarks: np.ndarray) -> np.ndarray:
        """Descriptors [..., 4] of frame landmarks (pose centred on the video's median)."""
        canon = apply(self.to_canonical(landmarks), np.asarray(landmarks, np.float64)[..., :2])
        d = describe(canon, self.neutral_width)
        d[..., 2:] -= self.pose_centre
        return d

    def targets(self, landmarks: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Warp points [..., W, 2] in frame pixels: each frame's own, with lips and chin moved
        from the frame's mouth shape to `target` [..., 2] (opening, width change)."""
        lm = np.asarray(landmarks, np.float64)[..., :2]
        m = self.to_canonical(landmarks)
        canon = apply(m, lm[..., list(WARP_POINTS), :])
        own = describe(apply(m, lm), self.neutral_width)[..., :2]
        delta = np.asarray(target, np.float64) - own
        canon = canon + np.einsum("...c,cwk->...wk", delta, self.basis.astype(np.float64))
        return apply(invert(m), canon).astype(np.float32)


def track_targets(jaw_open: np.ndarray, lip_width: np.ndarray, pucker: np.ndarray, lip_tuck: np.ndarray,
                  open_gain: float) -> np.ndarray:
    """A motion track's mouth channels as target (opening, width change) [N, 2] descriptors."""
    opening = np.maximum(0.0, np.asarray(jaw_open) - TUCK_CLOSING * np.asarray(lip_tuck)) * open_gain
    width = np.asarray(lip_width) - PUCKER_NARROWING * np.asarray(pucker)
    return np.stack([opening, width], 1).astype(np.float32)
