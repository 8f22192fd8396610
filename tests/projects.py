"""Small projects the tests build: plain photos, an ``anno_cfg.yml``, a synced store over them,
and a segmenter whose mask is the clicks' bounding box (so every mask is known exactly).

Plain functions, imported by the test modules (``from projects import ...``; tests/ is on
sys.path). Sizes are (width, height) in pixels as Pillow gives them; masks are (height, width)
bool arrays.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from dextr_core.config import AnnoConfig, load_config
from dextr_core.store import ProgressStore

#: Four extreme clicks (x, y) inside a photo of :func:`write_photo`'s default size.
POINTS = [[1, 5], [30, 6], [15, 1], [16, 25]]


def write_photo(path: Path, size: tuple[int, int] = (40, 30), color=(120, 60, 30),
                **save_options) -> Path:
    """A photo of one ``color`` (a grey level or an RGB triple) ``size`` = (width, height) px at
    ``path``, its format from the suffix (``save_options`` go to ``Image.save``); the folders
    above it are made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    Image.fromarray(np.full((height, width, 3), color, np.uint8)).save(path, **save_options)
    return path


def write_photos(folder: Path, names: Iterable[str], size: tuple[int, int] = (40, 30),
                 color=(120, 60, 30)) -> Path:
    """:func:`write_photo` for each of ``names`` (paths relative to ``folder``); returns
    ``folder``."""
    for name in names:
        write_photo(folder / name, size, color)
    return folder


def write_config(folder: Path, source: str = "images", destination: str = "masks",
                 labels: Iterable[str] = (), *, optional: str = "", header: str = "") -> Path:
    """``folder/anno_cfg.yml``: ``required`` source and destination (relative to ``folder``);
    an ``optional`` section when ``optional`` (its lines as written, indented two spaces) or
    ``labels`` is given, labels last; ``header`` text before it all (comments a tool that
    rewrites the file must keep). Returns the file's path."""
    text = f"{header}required:\n  source: {source}\n  destination: {destination}\n"
    labels = list(labels)
    if optional or labels:
        text += "optional:\n" + optional
        text += f"  labels: [{', '.join(labels)}]\n" if labels else ""
    path = folder / "anno_cfg.yml"
    path.write_text(text)
    return path


def synced_store(cfg: AnnoConfig, **options) -> ProgressStore:
    """The file store of config ``cfg`` (``options`` as for ``ProgressStore``), synced with its
    source folder."""
    store = ProgressStore(cfg.progress_file, cfg.source, **options)
    store.sync()
    return store


def linked_project(folder: Path, photos: dict[str, Path], labels: Iterable[str],
                   **config) -> tuple[AnnoConfig, ProgressStore]:
    """``(config, store)``: the photos ``{image id: photo file}`` linked into ``folder/images``
    (read in place), a config over them with ``labels`` (``config`` as for
    :func:`write_config`) and its synced store (claims lapse after 600 s)."""
    source = folder / "images"
    for image_id, photo in photos.items():
        (source / image_id).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(photo, source / image_id)
    cfg = load_config(write_config(folder, labels=labels, **config))
    return cfg, synced_store(cfg, claim_timeout_s=600.0)


def box_mask(points, shape: tuple[int, int]) -> np.ndarray:
    """The bounding box of ``points`` [[x, y], ...] (edges included) as a (height, width) =
    ``shape`` bool mask."""
    pts = np.asarray(points)
    out = np.zeros(shape, bool)
    x0, y0 = pts.min(axis=0).astype(int)
    x1, y1 = pts.max(axis=0).astype(int)
    out[y0:y1 + 1, x0:x1 + 1] = True
    return out


class BoxSegmenter:
    """A stand-in model: the mask of four clicks is their bounding box (:func:`box_mask`), the
    size of the photo it is given; clicks all on one spot are refused as a model would refuse
    them; ``calls`` counts segmentations."""

    name = "box"
    is_fallback = False

    def __init__(self):
        self.calls = 0

    def segment(self, image: np.ndarray, points) -> np.ndarray:
        """(H, W) bool: the box of ``points`` [[x, y], ...] on ``image`` (H, W, 3)."""
        self.calls += 1
        pts = np.asarray(points)
        if np.ptp(pts, axis=0).max() < 1:
            raise ValueError("all clicks are on one spot; click the object's extreme points.")
        return box_mask(pts, np.shape(image)[:2])
