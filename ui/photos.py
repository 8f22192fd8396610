"""Photos for the pages: decoded once per file version, display-size copies, JPEG encoding.

Full-resolution photos are shared by all sessions within :data:`FULL_IMAGE_CACHE_MB`; the
display copy of a photo is at most :data:`DISPLAY_MAX` CSS pixels, the size that fits the annotate
page's canvas column in a 1280 x 900 window, or the larger size a larger window leaves
(``ui.layout.photo_max``).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import streamlit as st

from dextr_core.images import load_image
from ui.layout import PHOTO_MAX

#: Largest size (width, height) in CSS pixels a photo is shown at on the annotate page: what
#: the page's layout leaves for it at 1280 x 900 (ui/layout.py).
DISPLAY_MAX = PHOTO_MAX

#: Small photos are shown enlarged up to this factor (nearest pixels are easier to click).
MAX_UPSCALE = 2.0


def file_mtime(path: Path) -> float:
    """The file's modification time (epoch s), -1 when it cannot be read: the file-version part
    of a cache key (photos here, thumbnails, the config)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0



@dataclass(frozen=True)
class DisplayImage:
    """A photo prepared for the page.

    ``full_size``: (width, height) of the upright photo in pixels; ``image``: the display-size
    H x W x 3 uint8 RGB copy (see :func:`display_size_for`: at most :data:`DISPLAY_MAX`, small
    photos enlarged up to :data:`MAX_UPSCALE`); ``jpeg``: that copy encoded once, the canvas
    background when there is no overlay.
    """

    full_size: tuple[int, int]
    image: np.ndarray
    jpeg: bytes

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) of :attr:`image` in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])


def display_size_for(full_size: tuple[int, int], max_size: tuple[int, int] = DISPLAY_MAX,
                     max_upscale: float = MAX_UPSCALE) -> tuple[int, int]:
    """(width, height) in CSS pixels a photo of ``full_size`` (width, height) is shown at.

    It fits in ``max_size``, keeps its aspect ratio, and a small photo is enlarged by at most
    ``max_upscale`` (so that its objects are easy to click); at least 1 px each way.
    """
    width, height = full_size
    scale = min(max_upscale, max_size[0] / width, max_size[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an H x W x 3 uint8 RGB array (for canvas backgrounds)."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


#: Memory for decoded full-resolution photos shared by all sessions (MB; env ANNO_IMAGE_CACHE_MB).
FULL_IMAGE_CACHE_MB = float(os.environ.get("ANNO_IMAGE_CACHE_MB", "1500"))


class _ImageLRU:
    """Decoded photos by (path, mtime), least recently used dropped first once their total size
    passes the budget; the newest one is always kept (a 12000 x 9000 photo is 324 MB)."""

    def __init__(self, budget_bytes: float):
        self.budget = budget_bytes
        self.items: OrderedDict[tuple[str, float], np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, path: str, mtime: float) -> np.ndarray:
        key = (path, mtime)
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        image = load_image(path)  # outside the lock: other sessions keep going meanwhile
        image.setflags(write=False)
        with self.lock:
            self.items[key] = image
            self.items.move_to_end(key)
            while len(self.items) > 1 and sum(a.nbytes for a in self.items.values()) > self.budget:
                self.items.popitem(last=False)
        return image


@st.cache_resource(show_spinner=False)
def _image_lru() -> _ImageLRU:
    return _ImageLRU(FULL_IMAGE_CACHE_MB * 1024 * 1024)


def _full_image(path: str, mtime: float) -> np.ndarray:
    return _image_lru().get(path, mtime)


def full_image(path: str | os.PathLike) -> np.ndarray:
    """The upright full-resolution photo (H x W x 3 uint8 RGB, read-only), decoded once.

    Photos are kept for all sessions within :data:`FULL_IMAGE_CACHE_MB` (least recently used
    dropped first; the newest is always kept). Raises
    :class:`~dextr_core.images.ImageReadError` for unreadable files.
    """
    p = Path(path)
    return _full_image(str(p), file_mtime(p))


@st.cache_resource(show_spinner=False, max_entries=64)
def _display_image(path: str, mtime: float, max_size: tuple[int, int]) -> DisplayImage:
    full = _full_image(path, mtime)
    height, width = full.shape[:2]
    size = display_size_for((width, height), max_size)
    if size == (width, height):
        small = np.ascontiguousarray(full)
    elif size[0] > width:
        small = cv2.resize(full, size, interpolation=cv2.INTER_CUBIC)
    else:
        small = cv2.resize(full, size, interpolation=cv2.INTER_AREA)
    small.setflags(write=False)
    return DisplayImage((width, height), small, encode_jpeg(small))


def display_image(path: str | os.PathLike, max_size: tuple[int, int] = DISPLAY_MAX
                  ) -> DisplayImage:
    """The :class:`DisplayImage` of a photo fitting ``max_size`` (width, height CSS px), made
    once per file version (path + mtime) and size.

    Raises :class:`~dextr_core.images.ImageReadError` for unreadable files.
    """
    p = Path(path)
    return _display_image(str(p), file_mtime(p), tuple(max_size))
