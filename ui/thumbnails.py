"""Thumbnails of photos with their masks drawn over them, for the leads' review and gallery.

:func:`thumbnail_jpeg` makes one (no Streamlit); :func:`thumbnail` caches it per version of the
photo and mask files (path + mtime, :func:`tile_key`), so the page's refreshes draw no thumbnail
twice; :func:`show_thumbnail` draws one, or says in its place which file cannot be read. Mask
file names come from :func:`dextr_core.masks.mask_path` (the page builds no path).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import streamlit as st
from PIL import Image, ImageOps

from dextr_core.images import ImageReadError, load_image, to_rgb_uint8
from dextr_core.masks import MaskFileError, clashing_ids, load_label_map, mask_path
from ui.messages import md
from ui.overlay import draw_overlay
from ui.photos import file_mtime
from ui.progress_view import store_of

#: Longest thumbnail side (pixels).
THUMB_PX = 240


def small_image(path: str) -> np.ndarray:
    """The photo downscaled to fit THUMB_PX (JPEG files decoded at reduced size), upright RGB
    H x W x 3 uint8. Raises ImageReadError for unreadable files."""
    try:
        with Image.open(path) as img:
            if img.mode in ("RGB", "L", "RGBA", "P", "CMYK", "YCbCr", "LA"):
                img.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))
                img = ImageOps.exif_transpose(img)
                img.thumbnail((THUMB_PX, THUMB_PX))
                if img.mode in ("RGBA", "LA", "P"):
                    img = img.convert("RGBA")
                return to_rgb_uint8(np.asarray(img.convert("RGB") if img.mode != "RGBA" else img))
    except Exception as exc:  # fall back to the full loader for its clear message
        raise ImageReadError(f"Cannot read image {path}: {exc}") from exc
    full = load_image(path)
    scale = THUMB_PX / max(full.shape[:2])
    if scale >= 1:
        return full
    size = (max(1, round(full.shape[1] * scale)), max(1, round(full.shape[0] * scale)))
    return cv2.resize(full, size, interpolation=cv2.INTER_AREA)


def thumbnail_jpeg(image_path: str, mask_file: str = "") -> bytes:
    """JPEG bytes of a thumbnail (longest side THUMB_PX) with the masks of ``mask_file`` (a label
    map; "" for none) drawn over it. Raises ImageReadError / MaskFileError for unreadable files."""
    small = small_image(image_path)
    masks: list[np.ndarray] = []
    if mask_file:
        labels = load_label_map(mask_file)
        size = (small.shape[1], small.shape[0])
        if labels.shape != small.shape[:2]:
            labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
        masks = [labels == i for i in range(1, int(labels.max()) + 1)]
    drawn = draw_overlay(small, masks)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(drawn[:, :, ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


#: What a gallery thumbnail can fail with (an unreadable photo or mask file): its tile says so.
THUMBNAIL_ERRORS = (ImageReadError, MaskFileError, OSError, ValueError)


_CLASHING: dict = {}  # (store, snapshot version) -> masks.clashing_ids of its ids, last only


def clashing(store, snap) -> frozenset:
    """The ids whose mask file keeps the whole photo name (:func:`dextr_core.masks.clashing_ids`),
    read again when the store changed (``snap.version``)."""
    store = store_of(store)
    key = (id(store), snap.version)
    if key not in _CLASHING:
        _CLASHING.clear()
        _CLASHING[key] = clashing_ids(store.image_ids())
    return _CLASHING[key]


def tile_key(cfg, image_id: str, clashing_ids_: frozenset = frozenset()) -> tuple:
    """What a thumbnail of one image is cached on: (photo file, its mtime, mask file or "" when
    there is none, its mtime); see :func:`thumbnail_jpeg`. ``clashing_ids_``: from
    :func:`clashing` (photos sharing a stem keep their whole name)."""
    image_file = Path(cfg.source, image_id)
    mask_file = mask_path(cfg.destination, image_id, cfg.mask_suffix, cfg.save_format,
                          clashing_ids_)
    return (str(image_file), file_mtime(image_file), str(mask_file) if mask_file.is_file() else "",
            file_mtime(mask_file))


@st.cache_data(show_spinner=False, max_entries=512)
def thumbnail(image_path: str, image_mtime: float, mask_file: str, mask_mtime: float) -> bytes:
    """:func:`thumbnail_jpeg`, cached per (path, mtime) of photo and mask (:func:`tile_key`)."""
    del image_mtime, mask_mtime
    return thumbnail_jpeg(image_path, mask_file)


def show_thumbnail(cfg, image_id: str, clashing_ids_: frozenset) -> None:
    """Draw the thumbnail of ``image_id`` (``cfg``: the AnnoConfig's folders and mask naming;
    ``clashing_ids_``: from :func:`clashing`), or a warning naming the file it cannot read."""
    try:
        st.image(thumbnail(*tile_key(cfg, image_id, clashing_ids_)), width="stretch")
    except THUMBNAIL_ERRORS as exc:
        st.warning(f"{md(image_id)}: {md(exc)}")
