"""Portrait loading: every Pillow mode becomes [H, W, 3] uint8 RGB, the right way up."""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [p for p in (HERE, ROOT) if p not in sys.path]

from sonic_core.errors import SonicInputError  # noqa: E402
from sonic_core.imageio import load_image  # noqa: E402


def _check(a, h, w):
    assert isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.shape == (h, w, 3)
    assert a.flags.c_contiguous and a.flags.writeable


def _ramp(h=40, w=60):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], -1).astype(np.uint8)


def test_rgb_png_and_jpeg(tmp_path):
    img = _ramp()
    Image.fromarray(img).save(tmp_path / "a.png")
    a = load_image(tmp_path / "a.png")
    _check(a, 40, 60)
    assert np.array_equal(a, img)
    Image.fromarray(img).save(tmp_path / "a.jpg", quality=95)
    assert np.abs(load_image(str(tmp_path / "a.jpg")).astype(int) - img).mean() < 3
    assert np.array_equal(load_image((tmp_path / "a.png").read_bytes()), img)


def test_grayscale_and_bilevel(tmp_path):
    g = _ramp()[..., 0]
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    a = load_image(tmp_path / "g.png")
    _check(a, 40, 60)
    assert np.array_equal(a[..., 0], g) and np.array_equal(a[..., 1], g) and np.array_equal(a[..., 2], g)
    Image.fromarray(g > 128).save(tmp_path / "b.png")  # mode "1"
    b = load_image(tmp_path / "b.png")
    assert set(np.unique(b)) <= {0, 255}


def test_rgba_composited_on_white(tmp_path):
    img = np.zeros((20, 30, 4), np.uint8)
    img[..., 0] = 200  # red everywhere...
    img[:, :10, 3] = 0  # ...transparent on the left (RGB under it: red; must become white)
    img[:, 10:20, 3] = 128  # half transparent
    img[:, 20:, 3] = 255  # opaque
    Image.fromarray(img, "RGBA").save(tmp_path / "a.png")
    a = load_image(tmp_path / "a.png")
    _check(a, 20, 30)
    assert np.all(a[:, :10] == 255)
    assert np.all(np.abs(a[:, 10:20].astype(int) - [227, 127, 127]) <= 1)
    assert np.all(a[:, 20:] == [200, 0, 0])
    la = Image.fromarray(np.dstack([np.full((20, 30), 50, np.uint8), img[..., 3]]), "LA")
    la.save(tmp_path / "la.png")
    b = load_image(tmp_path / "la.png")
    assert np.all(b[:, :10] == 255) and np.all(b[:, 20:] == 50)
    # numpy RGBA arrays follow the same rule
    assert np.all(load_image(img)[:, :10] == 255)


def _png16(arr: np.ndarray) -> bytes:
    """Minimal 16-bit PNG writer (Pillow cannot write 16-bit RGB)."""
    h, w = arr.shape[:2]
    ctype = 0 if arr.ndim == 2 else 2
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16bit_gray_and_rgb_scaled_not_clipped(tmp_path):
    g16 = np.linspace(0, 65535, 40 * 60).reshape(40, 60).astype(np.uint16)
    (tmp_path / "g16.png").write_bytes(_png16(g16))
    a = load_image(tmp_path / "g16.png")
    _check(a, 40, 60)
    assert np.abs(a[..., 0].astype(int) - np.round(g16 / 257.0)).max() <= 1
    assert a.max() == 255 and a.min() == 0 and len(np.unique(a[..., 0])) > 200  # full range, not clipped at 255
    rgb16 = (np.stack([g16, g16[::-1], 65535 - g16], -1)).astype(np.uint16)
    (tmp_path / "rgb16.png").write_bytes(_png16(rgb16))
    b = load_image(tmp_path / "rgb16.png")
    assert np.abs(b.astype(int) - np.round(rgb16 / 257.0)).max() <= 1
    # uint16 arrays too
    assert np.abs(load_image(rgb16).astype(int) - np.round(rgb16 / 257.0)).max() <= 1


def test_16bit_tiff(tmp_path):
    g16 = (np.arange(64 * 32).reshape(32, 64) * 32).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g.tif")
    a = load_image(tmp_path / "g.tif")
    assert np.abs(a[..., 0].astype(int) - np.round(g16 / 257.0)).max() <= 1


def test_palette_with_and_without_transparency(tmp_path):
    rgb = _ramp()
    p = Image.fromarray(rgb).quantize(64)
    p.save(tmp_path / "p.png")
    a = load_image(tmp_path / "p.png")
    _check(a, 40, 60)
    assert np.abs(a.astype(int) - rgb).mean() < 8
    p.info["transparency"] = 0
    p.save(tmp_path / "pt.png", transparency=0)
    b = load_image(tmp_path / "pt.png")
    idx = np.asarray(p) == 0
    assert idx.any() and np.all(b[idx] == 255)
    p.save(tmp_path / "p.gif")
    _check(load_image(tmp_path / "p.gif"), 40, 60)


def test_cmyk(tmp_path):
    rgb = _ramp()
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    a = load_image(tmp_path / "c.jpg")
    _check(a, 40, 60)
    assert np.abs(a.astype(int) - rgb).mean() < 6
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.tif")
    assert np.abs(load_image(tmp_path / "c.tif").astype(int) - rgb).mean() < 2


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation(tmp_path, orientation):
    # Stored pixels: a 40x60 (H x W) image with a red block at the top-left.
    img = np.zeros((40, 60, 3), np.uint8)
    img[:10, :10] = [255, 0, 0]
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(img).save(tmp_path / "r.jpg", exif=exif, quality=95)
    a = load_image(tmp_path / "r.jpg")
    expect = {1: (img, (40, 60)), 3: (np.rot90(img, 2), (40, 60)),
              6: (np.rot90(img, -1), (60, 40)), 8: (np.rot90(img, 1), (60, 40))}[orientation]
    _check(a, *expect[1])
    red = (a[..., 0] > 128) & (a[..., 1] < 100)
    ys, xs = np.nonzero(red)
    ey, ex = np.nonzero(expect[0][..., 0] > 128)
    assert abs(ys.mean() - ey.mean()) < 2 and abs(xs.mean() - ex.mean()) < 2


def test_float_and_torch_arrays():
    import torch

    f = np.random.default_rng(0).random((1, 20, 30, 3)).astype(np.float32)  # ComfyUI IMAGE
    a = load_image(f)
    _check(a, 20, 30)
    assert np.abs(a.astype(int) - np.round(f[0] * 255)).max() <= 1
    b = load_image(torch.from_numpy(f))
    assert np.array_equal(a, b)
    c = load_image(np.moveaxis(f[0], -1, 0))  # channels first
    assert np.array_equal(a, c)
    assert load_image(np.full((5, 6), 2.0)).max() == 255  # out of range floats clip


def test_very_large_image_low_memory(tmp_path):
    """8000x8000 (64 MP) loads, in a child process whose peak memory we measure."""
    p = tmp_path / "big.jpg"
    Image.new("L", (8000, 8000), 90).save(p, quality=70)  # 64 MB while saving, small file
    code = (
        "import resource, sys; sys.path.insert(0, %r)\n"
        "from sonic_core.imageio import load_image\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "a = load_image(%r)\n"
        "assert a.shape == (8000, 8000, 3) and a.dtype.name == 'uint8' and int(a[4000, 4000, 1]) in range(88, 93)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n" % (ROOT, str(p))
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = (int(v) / 1024 for v in out.stdout.split()[-2:])
    # result 192 MB + Pillow's 64 MB grayscale decode + a band; well under 2x the result
    assert after - before < 400, (before, after)


def test_over_cap_is_refused_before_decoding(tmp_path):
    p = tmp_path / "wide.png"
    Image.new("L", (3000, 2000)).save(p)
    with pytest.raises(SonicInputError, match=r"wide\.png.*3000x2000.*limit"):
        load_image(p, max_pixels=5_000_000)


def test_errors(tmp_path):
    with pytest.raises(SonicInputError, match="not found.*missing.png"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("hello, not an image")
    with pytest.raises(SonicInputError, match="notes.txt.*not an image"):
        load_image(tmp_path / "notes.txt")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(SonicInputError, match="empty.jpg.*0 bytes"):
        load_image(tmp_path / "empty.jpg")
    buf = io.BytesIO()
    Image.fromarray(_ramp(200, 200)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[:300])
    with pytest.raises(SonicInputError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(SonicInputError):
        load_image(np.zeros((2, 10, 10, 3), np.uint8))  # a batch, not a portrait


def test_repo_test_photos_load():
    for name in ("camera.png", "coffee.png"):
        p = os.path.join(HERE, "data", name)
        if os.path.exists(p):
            a = load_image(p)
            assert a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8
