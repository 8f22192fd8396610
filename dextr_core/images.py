"""Reading photos as upright 8-bit RGB arrays, whatever their mode, depth or EXIF orientation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DextrError

#: File extensions the tool treats as images (compared in lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

#: Default pixel budget (width x height): larger images are refused from their header, before
#: any pixel is decoded. Very large scans are legitimate here (the app is tested with
#: 12000 x 9000 = 108 MP). ``optional.max_image_megapixels`` sets it per config.
DEFAULT_MAX_PIXELS = 200_000_000
_max_pixels = DEFAULT_MAX_PIXELS

# This module's budget replaces Pillow's process-wide decompression-bomb guard: Pillow's raises
# DecompressionBombError from Image.open (before the size can be reported) and only above twice
# its limit. Every reader here checks the header's size against the budget before decoding.
Image.MAX_IMAGE_PIXELS = None


class ImageReadError(DextrError):
    """An image file that cannot be decoded (or is over the pixel budget); the message names the
    file, its size where known, and what to do."""


def set_max_pixels(n: int | None) -> None:
    """Set the process-wide pixel budget used when a reader gets no ``max_pixels`` (None: back
    to :data:`DEFAULT_MAX_PIXELS`). ``n`` is width x height in pixels, above 0."""
    global _max_pixels
    if n is None:
        _max_pixels = DEFAULT_MAX_PIXELS
        return
    if int(n) <= 0:
        raise ValueError(f"max_pixels must be above 0, got {n}")
    _max_pixels = int(n)


def max_pixels() -> int:
    """The process-wide pixel budget (width x height) in force."""
    return _max_pixels


def _megapixels(n: int) -> str:
    mp = n / 1_000_000
    return f"{mp:.0f}" if mp >= 10 else f"{mp:.3g}"


def _check_budget(p: Path, size: tuple[int, int], limit: int | None) -> None:
    limit = _max_pixels if limit is None else int(limit)
    width, height = size
    if width * height > limit:
        raise ImageReadError(
            f"Image {p} is {width} x {height} px = {_megapixels(width * height)} MP, over the "
            f"{_megapixels(limit)} MP limit; it was not decoded. Scale it down (or split it), "
            "or raise optional.max_image_megapixels in the config if this server has the memory "
            "for it."
        )


def is_image_file(path: str | os.PathLike) -> bool:
    """True when ``path`` has one of :data:`IMAGE_EXTENSIONS` (any letter case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Convert an image array to H x W x 3 uint8 RGB.

    Accepts (H, W) grayscale, (H, W, 1), (H, W, 3) and (H, W, 4) (alpha dropped), in uint8, 16-bit
    integers (scaled by 1/257), bool, or floats (taken as 0..1 if their maximum is at most 1, else
    0..255). Returns a new C-contiguous array; raises ``ValueError`` for any other shape.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = np.stack([a, a, a], axis=-1)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(
            f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}"
        )
    a = a[:, :, :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == bool:
        return np.ascontiguousarray(a.astype(np.uint8) * 255)
    if np.issubdtype(a.dtype, np.integer):
        # 16-bit data (uint16, or wider ints holding values past 255) maps 0..65535 to 0..255.
        if a.dtype == np.uint16 or (a.size and a.max() > 255):
            a = np.clip(a.astype(np.float64) / 257.0 + 0.5, 0, 255)
        return np.ascontiguousarray(np.clip(a, 0, 255).astype(np.uint8))
    if np.issubdtype(a.dtype, np.floating):
        f = np.nan_to_num(a.astype(np.float64))
        if f.size and f.max() <= 1.0:
            f = f * 255.0
        return np.ascontiguousarray(np.clip(f + 0.5, 0, 255).astype(np.uint8))
    raise ValueError(f"unsupported image dtype {a.dtype}")


def _pil_to_rgb_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img)
        if img.mode == "I" and a.size and a.max() > 65535:
            a = a.astype(np.float64) / a.max()
            return to_rgb_uint8(a)
        return to_rgb_uint8(a.astype(np.uint16))
    if img.mode == "F":
        return to_rgb_uint8(np.asarray(img))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as an upright H x W x 3 uint8 RGB array.

    EXIF orientation is applied (the array is what a viewer shows); grayscale, palette, 16-bit and
    RGBA files are converted (transparent pixels become white). Raises :class:`ImageReadError`
    naming the file when it is missing, truncated or not an image, or when its header says it is
    over ``max_pixels`` (width x height; default :func:`max_pixels`), before decoding it.
    """
    p = Path(path)
    try:
        with Image.open(p) as img:
            _check_budget(p, img.size, max_pixels)
            img.load()
            img = ImageOps.exif_transpose(img)
            return _pil_to_rgb_array(img)
    except FileNotFoundError:
        raise ImageReadError(f"Image not found: {p}. Check the source folder in anno_cfg.yml.") from None
    except ImageReadError:
        raise
    except MemoryError as exc:
        raise ImageReadError(f"Image {p} is too large to decode in this server's memory; scale it "
                             "down or lower optional.max_image_megapixels.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise ImageReadError(
            f"Cannot read image {p}: {exc}. The file is corrupt or not an image; "
            "replace it or remove it from the source folder."
        ) from exc


def image_size(path: str | os.PathLike, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) in pixels of an image file as shown upright, read from its header only.

    Raises :class:`ImageReadError` when the header cannot be read, or when the image is over
    ``max_pixels`` (width x height; default :func:`max_pixels`), so that a scan marks it unreadable
    before anything tries to decode it.
    """
    p = Path(path)
    try:
        with Image.open(p) as img:
            width, height = img.size
            _check_budget(p, (width, height), max_pixels)
            try:
                orientation = img.getexif().get(0x0112, 1)
            except Exception:  # a damaged EXIF block must not hide the image
                orientation = 1
            if img.format == "TIFF":
                # Pillow reports a TIFF's size already turned by its orientation; the pixels as
                # stored are ImageWidth (256) x ImageLength (257) of its header
                width = img.tag_v2.get(256, width)
                height = img.tag_v2.get(257, height)
    except ImageReadError:
        raise
    except (FileNotFoundError, UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise ImageReadError(
            f"Cannot read image {p}: {exc}. The file is corrupt or not an image; "
            "replace it or remove it from the source folder."
        ) from exc
    if orientation in (5, 6, 7, 8):
        return height, width
    return width, height
