"""Portrait loading: any image Pillow reads (or an array) -> [H, W, 3] uint8 RGB.

Handled: EXIF orientation (phone photos), grayscale / 1-bit, palette (with or without
transparency), CMYK (through its ICC profile when it has one), RGBA / LA / PA, 16-bit
grayscale (I;16*) and 32-bit int/float modes (scaled, never clipped), float arrays in 0..1,
uint16 arrays, torch tensors and ComfyUI IMAGE batches of one ([1, H, W, 3] float).

Transparency is composited onto WHITE: portrait cut-outs usually have a transparent
background, and the colour stored under fully transparent pixels is arbitrary (often
black), which would give a black backdrop and dark fringes in semi-transparent hair.
White is what image viewers and product/portrait cut-out conventions show, keeps the
face detector's contrast around the head, and matches the "studio backdrop" look users
expect in the video.

Large photos: Pillow's decompression-bomb guard warns above ~89 MP and refuses above
~179 MP. We allow up to ``MAX_PIXELS`` (100 MP by default; an 8000x8000 photo is 64 MP)
without touching Pillow's global setting, and refuse anything bigger with a clear error
before decoding it.
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import SonicInputError, check_input_file

MAX_PIXELS = 100_000_000
WHITE = (255, 255, 255)
_ROWS_PER_CHUNK = 512  # chunked 16-bit -> 8-bit conversion keeps temporaries small


def load_image(source, max_pixels: int | None = None) -> np.ndarray:
    """Load a portrait as a C-contiguous [H, W, 3] uint8 RGB array.

    source: a path, file bytes, a PIL image, a numpy array ([H,W], [H,W,1|3|4], [1,H,W,C],
        or channels-first [C,H,W]; uint8, uint16, bool or float 0..1) or a torch tensor.
    max_pixels: refuse images with more pixels than this (default MAX_PIXELS = 100 MP).
    """
    cap = int(max_pixels or MAX_PIXELS)
    if isinstance(source, Image.Image):
        return _contig(_pil_to_rgb(_apply_exif_orientation(source), "<PIL image>"))
    if hasattr(source, "detach") or isinstance(source, np.ndarray):
        return array_to_rgb(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = "<image bytes>"
        if len(source) == 0:
            raise SonicInputError("Image data is empty (0 bytes). Pass the contents of a PNG/JPEG/WEBP file.")
        fp = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        check_input_file(name, "Image", "a photo", "photo")
        fp = name
    else:
        raise SonicInputError(
            f"Unsupported image input of type {type(source).__name__}; pass a file path, file bytes, "
            "a PIL image, a numpy array or a torch tensor."
        )

    try:
        with warnings.catch_warnings():
            # Our own cap replaces Pillow's bomb warning (89 MP); its hard error (179 MP) is above our cap.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except UnidentifiedImageError:
        raise SonicInputError(
            f"'{name}' is not an image Pillow can read. Use a PNG, JPEG, WEBP, BMP or TIFF photo."
        ) from None
    except Image.DecompressionBombError:
        raise SonicInputError(
            f"Image '{name}' is far too large (over {Image.MAX_IMAGE_PIXELS * 2 / 1e6:.0f} MP). "
            f"Downscale it below {cap / 1e6:.0f} MP; the video is rendered at most at a few megapixels anyway."
        ) from None
    except OSError as e:
        raise SonicInputError(f"Image file '{name}' could not be read: {e}. Check the file.") from None

    with img:
        result = _load_opened(img, name, cap)
    del img  # free Pillow's buffer before the (possible) final copy
    return _contig(result)


MIN_SIDE = 16  # pixels: below this on either side no face can be found


def _load_opened(img: Image.Image, name: str, cap: int) -> np.ndarray:
    if True:
        w, h = img.size
        if w * h > cap:
            raise SonicInputError(
                f"Image '{name}' is {w}x{h} ({w * h / 1e6:.0f} MP), above the {cap / 1e6:.0f} MP limit. "
                "Downscale the photo (the video is rendered at most at a few megapixels anyway)."
            )
        if w == 0 or h == 0:
            raise SonicInputError(f"Image '{name}' has no pixels ({w}x{h}). Use a real photo.")
        if min(w, h) < MIN_SIDE:
            raise SonicInputError(f"Image '{name}' is {w}x{h} pixels, too small to find a face in; use a photo at "
                                  f"least {MIN_SIDE} pixels on each side with the face about 80 pixels wide or more.")
        try:
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated GIF/WEBP, multi-page TIFF: first frame
            img.load()
            img = _apply_exif_orientation(img)
            return _pil_to_rgb(img, name)
        except (OSError, SyntaxError, ValueError) as e:
            raise SonicInputError(
                f"Image file '{name}' is damaged or truncated ({e}). Re-export or re-download the photo."
            ) from None


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF Orientation tag says (no copy when there is nothing to do)."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:
        return img
    if orientation in (None, 1):
        return img
    return ImageOps.exif_transpose(img) or img


def _pil_to_rgb(img: Image.Image, name: str) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        return _rgb_to_array(img)
    if mode == "L":
        return _rgb_to_array(img)
    if mode == "1":
        return _gray_to_rgb(np.asarray(img.convert("L")))
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _gray_to_rgb(_wide_to_u8(np.asarray(img), mode))
    if mode == "P":
        has_alpha = "transparency" in img.info or (img.palette is not None and img.palette.mode == "RGBA")
        img = img.convert("RGBA" if has_alpha else "RGB")
        return _pil_to_rgb(img, name)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        if mode != "RGBA":
            img = img.convert("RGBA")
        return _composite_white(img)
    if mode == "CMYK":
        return _pil_to_rgb(_cmyk_to_rgb(img), name)
    return _pil_to_rgb(img.convert("RGB"), name)  # YCbCr, LAB, HSV, ...


def _rgb_to_array(img: Image.Image) -> np.ndarray:
    """RGB or L PIL image -> writable [H, W, 3] uint8 array. Big images are copied in bands of
    rows: Pillow's own export (tobytes / __array_interface__) needs two extra full-size buffers."""
    w, h = img.size
    gray = img.mode == "L"
    if w * h <= 4_000_000:
        a = np.array(img, dtype=np.uint8)
        return _gray_to_rgb(a) if gray else a
    out = np.empty((h, w, 3), dtype=np.uint8)
    for r in range(0, h, _ROWS_PER_CHUNK):
        r1 = min(h, r + _ROWS_PER_CHUNK)
        band = np.asarray(img.crop((0, r, w, r1)))
        out[r:r1] = band[..., None] if gray else band
    return out


def _cmyk_to_rgb(img: Image.Image) -> Image.Image:
    icc = img.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            return ImageCms.profileToProfile(img, src, dst, outputMode="RGB")
        except Exception:  # no littlecms, broken profile: fall back to the naive formula
            pass
    return img.convert("RGB")


def _composite_white(img: Image.Image) -> np.ndarray:
    bg = Image.new("RGB", img.size, WHITE)
    bg.paste(img.convert("RGB") if img.mode != "RGB" else img, mask=img.getchannel("A"))
    return _pil_to_rgb(bg, "")


def _contig(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if not a.flags.c_contiguous or not a.flags.writeable or a.dtype != np.uint8:
        a = np.array(a, dtype=np.uint8, order="C", copy=True)
    return a


def _gray_to_rgb(g: np.ndarray) -> np.ndarray:
    out = np.empty(g.shape + (3,), dtype=np.uint8)
    out[...] = g[..., None]
    return out


def _wide_to_u8(a: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16-bit (or 32-bit int / float) samples to 0..255 by their nominal range, in row chunks."""
    a = np.asarray(a)
    if mode.startswith("I;16"):
        full = 65535.0
    elif mode == "F":
        finite_max = float(np.nanmax(a)) if a.size else 0.0
        full = 1.0 if finite_max <= 1.0 else (255.0 if finite_max <= 255.0 else 65535.0 if finite_max <= 65535.0 else finite_max)
    else:  # "I": 32-bit ints, usually 16-bit PNG/TIFF data widened by Pillow
        vmax = int(a.max()) if a.size else 0
        full = 255.0 if vmax <= 255 else 65535.0 if vmax <= 65535 else float(vmax)
    out = np.empty(a.shape, dtype=np.uint8)
    scale = 255.0 / full
    for r in range(0, a.shape[0], _ROWS_PER_CHUNK):
        block = a[r:r + _ROWS_PER_CHUNK].astype(np.float32)
        np.nan_to_num(block, copy=False)
        block *= scale
        block += 0.5
        np.clip(block, 0, 255, out=block)
        out[r:r + _ROWS_PER_CHUNK] = block.astype(np.uint8)
    return out


def array_to_rgb(a) -> np.ndarray:
    """Numpy array / torch tensor -> [H, W, 3] uint8 RGB (see load_image for accepted layouts)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise SonicInputError(f"Image batch has {a.shape[0]} images; pass a single portrait.")
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channels first -> last
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise SonicInputError(f"Image array has shape {a.shape}; expected [H, W], [H, W, 3] or [H, W, 4].")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise SonicInputError(f"Image array has no pixels (shape {a.shape}).")

    if a.dtype == np.uint8:
        u8 = a
    elif a.dtype == np.bool_:
        u8 = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        u8 = _wide_to_u8(a, "I;16")
    elif np.issubdtype(a.dtype, np.floating):
        # ComfyUI IMAGE convention: float 0..1 (values outside are clipped).
        u8 = np.empty(a.shape, dtype=np.uint8)
        for r in range(0, a.shape[0], _ROWS_PER_CHUNK):
            block = np.nan_to_num(a[r:r + _ROWS_PER_CHUNK].astype(np.float32))
            u8[r:r + _ROWS_PER_CHUNK] = np.clip(block * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        if a.min() < 0 or a.max() > 65535:
            raise SonicInputError(f"Integer image array has values outside 0..65535 (dtype {a.dtype}).")
        u8 = _wide_to_u8(a, "I") if a.max() > 255 else a.astype(np.uint8)
    else:
        raise SonicInputError(f"Unsupported image array dtype {a.dtype}; use uint8, uint16 or float 0..1.")

    if u8.ndim == 2:
        return _gray_to_rgb(u8)
    if u8.shape[2] == 4:  # composite onto white (see module docstring), in row chunks
        out = np.empty(u8.shape[:2] + (3,), dtype=np.uint8)
        for r in range(0, u8.shape[0], _ROWS_PER_CHUNK):
            blk = u8[r:r + _ROWS_PER_CHUNK]
            alpha = blk[..., 3:4].astype(np.float32) * (1.0 / 255.0)
            rgb = blk[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha) + 0.5
            out[r:r + _ROWS_PER_CHUNK] = np.clip(rgb, 0, 255).astype(np.uint8)
        return out
    return _contig(u8)
