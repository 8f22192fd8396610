"""Exports of finished annotations: COCO instances JSON (RLE or polygons), per-image label maps,
palette previews, YOLO segmentation and Pascal VOC datasets (the last two and the polygons are in
:mod:`dextr_core.formats`; this module keeps the selection, the guards and the atomic writing).

The label-map exports (masks, palette) copy the per-image label maps in the config's destination
folder (value ``i`` = object ``i``, one label per pixel: where objects overlap the later one
holds the pixel). The COCO export is per object: each annotation is the object's own mask file
(``<destination>/.drafts/<id>/<object id>.png``, written at Accept), so overlapping objects keep
all their pixels; objects without one (imported from DEXTR-AnnoTool) fall back to the label map.
The export's result counts the pixels shared by overlapping objects. The labels, clicks, annotator and engine from the progress store's object records
(``store.objects(image_id)``, index ``i`` = value ``i``). Everything is written atomically: a
folder export is built in a temporary folder next to ``out`` and renamed into place, a file export
(JSON or ``.zip``) is written to a temporary file and renamed. An overwrite writes the new export
completely first; only then is the old one moved aside (and removed once the new one is in place),
so a failure at any point leaves the old export as it was and nothing half-written under ``out``.
Folders and files get the process umask's permissions (like ``mkdir`` and ``open``).

An export never touches what the tool reads or manages: ``out`` may not be, or contain, the source
or destination folder, the config's folder or the progress file's folder, nor lie inside the
source, the destination or the progress file's folder (the app's own ``exports/`` next to the
config is fine), nor be the config file, the progress store's files or DEXTR-AnnoTool's progress
file. A folder export carries a ``.dextr-export`` marker; an existing folder is replaced only if it
has that marker or is empty.

Before the app has made a progress store for a DEXTR-AnnoTool folder, the command line exports
it as it is: that tool's progress file and masks are imported into a temporary store (nothing is
written beside the photos) and what the import said is printed as notes.

Command line::

    python -m dextr_core.export --config anno_cfg.yml --format coco --out export/instances.json
    python -m dextr_core.export --config anno_cfg.yml --format palette --out preview --zip
    python -m dextr_core.export --config anno_cfg.yml --format coco --segmentation polygon \
        --out export/instances-polygons.json
    python -m dextr_core.export --config anno_cfg.yml --format yolo --out export/yolo [--link]
    python -m dextr_core.export --config anno_cfg.yml --format voc --out export/voc
"""

from __future__ import annotations

import argparse
import colorsys
import contextlib
import csv
import datetime as _dt
import io
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
from PIL import Image

from .errors import DextrError
from .formats import ExportImage, PhotoFile
from .formats.coco import SEGMENTATIONS
from .formats.coco import segmentation as coco_segmentation
from .formats.polygons import DEFAULT_TOLERANCE
from .masks import (
    MaskFileError,
    atomic_write,
    clashing_ids,
    encode_label_map,
    label_map_object_ids,
    load_label_map,
    load_object_mask,
    made_label,
    mask_path,
    object_mask_path,
    shared_pixels,
)
from .store.records import review_state

#: Export formats: COCO instances JSON, per-image label maps (DEXTR-AnnoTool layout), palette PNGs,
#: the Ultralytics YOLO segmentation layout, the Pascal VOC segmentation layout.
FORMATS = ("coco", "masks", "palette", "yolo", "voc")
#: Image statuses an export can select; "all" takes every image that has a mask file,
#: "approved" the done images a lead approved as they stand (see store.review_state).
STATUSES = ("done", "approved", "skipped", "in_progress", "todo", "all")

ProgressCallback = Callable[[int, int], None]
#: File in every folder export: an existing folder is replaced only when it holds this (or is empty).
MARKER_NAME = ".dextr-export"


class ExportError(DextrError):
    """An export that cannot be written; the message says why and what to do."""


class _Store(Protocol):
    def images(self, status: str | None = None) -> list[Any]: ...
    def objects(self, image_id: str | None = None) -> list[Any]: ...


@dataclass
class ExportResult:
    """What an export wrote: ``path`` (file or folder), counts and the problems it worked around."""

    path: Path
    format: str
    images: int = 0
    objects: int = 0
    warnings: list[str] = field(default_factory=list)
    #: Pixels held by two or more objects of one image, summed over the images (COCO exports:
    #: each object keeps them; label maps: the later object holds them).
    shared_pixels: int = 0
    #: Images with such shared pixels.
    overlapping_images: int = 0
    #: format-specific counts for the summary, e.g. {"kept RLE (holes)": 3}
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: what was written, with the counts (the CLI prints it, the page shows it)."""
        extra = "".join(f", {n} objects {what}" for what, n in self.counts.items() if n)
        if self.shared_pixels:
            extra += (f", {self.shared_pixels} pixels shared by overlapping objects in "
                      f"{self.overlapping_images} images (each object keeps them)")
        return (f"wrote {self.path}: {self.images} images, {self.objects} objects{extra} "
                f"({len(self.warnings)} warnings)")


def _field(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, dict):
        return record.get(name, default)
    return getattr(record, name, default)


def palette_colors(count: int = 256) -> np.ndarray:
    """uint8 (count, 3) RGB colours: 0 is black, the others distinct (golden-ratio hue steps)."""
    colors = np.zeros((count, 3), np.uint8)
    for i in range(1, count):
        hue = (i * 0.618033988749895) % 1.0
        sat = 0.65 + 0.35 * ((i // 7) % 2)
        val = 0.95 - 0.25 * ((i // 3) % 2)
        colors[i] = [round(c * 255) for c in colorsys.hsv_to_rgb(hue, sat, val)]
    return colors


def palette_png(labels: np.ndarray) -> bytes:
    """A mode-P PNG of a label map: 0 black, each object id its own colour.

    Ids above 255 (uint16 label maps) reuse the colours 1..255 (``(id - 1) % 255 + 1``).
    """
    a = np.asarray(labels)
    if a.dtype != np.uint8:
        wide = a.astype(np.int64)
        a = np.where(wide > 0, (wide - 1) % 255 + 1, 0).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(a))  # mode L; putpalette makes it P, same indices
    img.putpalette(palette_colors(256).reshape(-1).tolist())
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _selected_images(store: _Store, status: str) -> list[Any]:
    if status not in STATUSES:
        raise ExportError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
    if status == "approved":
        records = [r for r in store.images(status="done") if review_state(r) == "approved"]
    else:
        records = store.images() if status == "all" else store.images(status=status)
    return sorted(records, key=lambda r: str(_field(r, "id")))


def _clashing(store: _Store) -> frozenset[str]:
    """The image ids whose mask file keeps the whole photo name (:func:`masks.clashing_ids`)."""
    ids = getattr(store, "image_ids", None)
    return clashing_ids(ids() if ids is not None else
                        [str(_field(r, "id")) for r in store.images()])


def _iter_label_maps(
    config: Any,
    records: list[Any],
    warnings: list[str],
    progress: ProgressCallback | None,
    clashing: frozenset[str] = frozenset(),
) -> Iterator[tuple[Any, np.ndarray]]:
    """(image record, label map, the object ids the file names or None) for each selected image
    whose mask file can be read."""
    total = len(records)
    gone: list[str] = []
    for n, record in enumerate(records, start=1):
        image_id = str(_field(record, "id"))
        path = mask_path(config.destination, image_id, config.mask_suffix, config.save_format,
                         clashing)
        try:
            if path.is_file():
                if _field(record, "missing") or not Path(config.source, image_id).is_file():
                    gone.append(image_id)
                yield record, load_label_map(path), label_map_object_ids(path)
            elif _field(record, "status") == "done":
                warnings.append(f"{image_id}: no mask file {path}; reopen the image and annotate "
                                "it again")
        except MaskFileError as exc:
            warnings.append(f"{image_id}: {exc}")
        finally:
            if progress is not None:
                progress(n, total)
    if gone:
        first = ", ".join(gone[:5]) + (", ..." if len(gone) > 5 else "")
        warnings.append(f"{len(gone)} exported image(s) are no longer in the source folder "
                        f"{config.source} (renamed, moved or deleted): {first}. Their masks are "
                        "in the export but their photos are not where the export says; put them "
                        "back, or reopen them under their new names")


def _object_masks(config: Any, image_id: str, lm: np.ndarray, objects: dict[int, Any],
                  warnings: list[str]) -> dict[int, np.ndarray]:
    """Each object's own bool (H, W) mask by index: its object file where the label map was
    made from it (:func:`dextr_core.masks.made_label`), else its label in ``lm`` (a file changed
    after the image was finished, by a correction left without Image done, gets a warning)."""
    count = max([int(lm.max())] + list(objects))
    found = {}
    for index in range(1, count + 1):
        obj = objects.get(index)
        object_id = str(_field(obj, "object_id", "") or "") if obj is not None else ""
        own = load_object_mask(object_mask_path(config.destination, image_id, object_id),
                               lm.shape) if object_id else None
        if own is not None and not made_label(own, lm, index):
            warnings.append(f"{image_id}: object {index}'s own mask was changed after the image "
                            "was finished (a correction left without Image done); exported as "
                            "its mask file has it")
            own = None
        found[index] = own if own is not None else lm == index
    return found


def coco_dataset(
    config: Any,
    store: _Store,
    *,
    status: str = "done",
    progress: ProgressCallback | None = None,
    warnings: list[str] | None = None,
    segmentation: str = "rle",
    polygon_tolerance: float = DEFAULT_TOLERANCE,
    summary_counts: dict[str, int] | None = None,
    overlaps: list[int] | None = None,
) -> dict:
    """Build a COCO instances dict from the objects' own masks and records.

    Each annotation's mask is the object's own file (see the module docstring), so objects that
    overlap both keep the shared pixels; ``overlaps`` (a list, if given) gets the count of
    shared pixels of each image that has some.

    ``images``: id 1..N, ``file_name`` = the store's image id (path relative to the source folder),
    ``width``/``height`` in pixels. ``categories``: the config's labels, ids 1..K in label order
    (labels found in the store but no longer in the config are appended after them, with a
    warning). ``annotations``: one per non-empty object, ``segmentation`` = COCO RLE (``counts`` as
    text), ``area`` (pixels), ``bbox`` ``[x, y, w, h]``, ``iscrowd`` 0, plus ``annotator``,
    ``engine`` and ``points`` (the clicks, ``[[x, y], ...]`` in full-image pixels).
    ``segmentation="polygon"``: polygons of the outline instead (``polygon_tolerance`` pixels,
    :mod:`dextr_core.formats.coco`); an object with holes keeps RLE and is counted in
    ``summary_counts["kept RLE (holes)"]``.

    Each image's objects and mask file are from the same *Image done*, or the image is left out
    with a warning (:func:`_paired_label_maps`).
    """
    from pycocotools import mask as mask_utils

    warnings = [] if warnings is None else warnings
    labels = list(config.labels)
    category_ids = {name: i for i, name in enumerate(labels, start=1)}
    images: list[dict] = []
    annotations: list[dict] = []
    records = _selected_images(store, status)
    for record, lm, objects in _paired_label_maps(config, store, records, warnings, progress):
        image_id = str(_field(record, "id"))
        height, width = lm.shape
        rec_w, rec_h = _field(record, "width"), _field(record, "height")
        if rec_w and rec_h and (int(rec_w), int(rec_h)) != (width, height):
            warnings.append(f"{image_id}: mask is {width}x{height} but the image is "
                            f"{rec_w}x{rec_h}; re-annotate it")
            continue
        coco_image_id = len(images) + 1
        images.append({"id": coco_image_id, "file_name": image_id, "width": int(width),
                       "height": int(height)})
        if len(objects) > int(lm.max()):
            warnings.append(f"{image_id}: the store lists {len(objects)} objects but the mask "
                            f"file holds {int(lm.max())}; reopen the image to check it")
        own = _object_masks(config, image_id, lm, objects, warnings)
        shared = shared_pixels(list(own.values()))
        if shared and overlaps is not None:
            overlaps.append(shared)
        for index, mask in own.items():
            obj = objects.get(index)
            binary = np.asfortranarray(mask.astype(np.uint8))
            if not binary.any():
                warnings.append(f"{image_id}: object {index} has an empty mask and was left out")
                continue
            label = str(_field(obj, "label", "") or labels[0]) if obj else labels[0]
            if obj is None:
                warnings.append(f"{image_id}: object {index} has no record in the progress store; "
                                f"exported as {labels[0]!r}")
            if label not in category_ids:
                category_ids[label] = len(category_ids) + 1
                warnings.append(f"label {label!r} is not in optional.labels; added as category "
                                f"{category_ids[label]}")
            rle = mask_utils.encode(binary)
            counts = rle["counts"]
            rle["counts"] = counts.decode("ascii") if isinstance(counts, bytes) else counts
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
            points = _field(obj, "points", []) if obj else []
            seg, kept_rle = coco_segmentation(
                binary, {"size": [int(height), int(width)], "counts": rle["counts"]},
                segmentation, polygon_tolerance)
            if summary_counts is not None and kept_rle:
                summary_counts["kept RLE (holes)"] = summary_counts.get("kept RLE (holes)", 0) + 1
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": coco_image_id,
                "category_id": category_ids[label],
                "segmentation": seg,
                "area": float(mask_utils.area(rle)),
                "bbox": bbox,
                "iscrowd": 0,
                "annotator": _field(obj, "annotator") if obj else None,
                "engine": _field(obj, "engine") if obj else None,
                "points": [[float(x), float(y)] for x, y in (points or [])],
            })
    categories = [{"id": i, "name": name, "supercategory": "object"}
                  for name, i in category_ids.items()]
    return {
        "info": {
            "description": f"DEXTR annotations from {config.source}",
            "date_created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "status": status,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def _paired_label_maps(config: Any, store: _Store, records: list[Any], warnings: list[str],
                       progress: ProgressCallback | None
                       ) -> Iterator[tuple[Any, np.ndarray, dict[int, Any]]]:
    """(image record, label map, {index: object}) for each selected image whose mask file can be
    read, its objects and file from the same *Image done*.

    A PNG mask names its objects' ids; when they are not the ids read from the store (a
    correction finished while the export ran) both are read again (:func:`_matching_pair`) and
    an image whose pair still differs is left out with a warning. For files that name no objects
    (``.npy``, DEXTR-AnnoTool's), an image finished again while the export ran gets a warning at
    the end.
    """
    by_image: dict[str, dict[int, Any]] = {}
    for obj in store.objects():  # one read of every object instead of one call per image
        by_image.setdefault(str(_field(obj, "image_id")), {})[int(_field(obj, "index"))] = obj
    clashing = _clashing(store)
    unchecked: dict[str, Any] = {}  # image id -> completed_at, for files that name no objects
    for record, lm, file_ids in _iter_label_maps(config, records, warnings, progress, clashing):
        image_id = str(_field(record, "id"))
        objects = by_image.get(image_id, {})
        if file_ids is not None and file_ids != _ids(objects):
            # the file is from another Image done than the objects read above (a correction
            # finished meanwhile): read both again until they belong together
            pair = _matching_pair(config, store, image_id, clashing)
            if pair is None:
                warnings.append(f"{image_id}: its mask file and its objects in the progress "
                                "store are from different saves (is someone correcting it "
                                "now?); it was left out. Export again when it is done")
                continue
            record, lm, objects = pair
        elif file_ids is None:  # a file that names no objects (.npy, DEXTR-AnnoTool's)
            unchecked[image_id] = _field(record, "completed_at")
        yield record, lm, objects
    if unchecked:  # completed again since its objects were read: they may not match the file
        changed = sorted(str(_field(r, "id")) for r in store.images()
                         if str(_field(r, "id")) in unchecked
                         and _field(r, "completed_at") != unchecked[str(_field(r, "id"))])
        warnings.extend(f"{image_id}: was finished again while the export ran, so its objects "
                        "and mask may be from different saves; export again" for image_id in changed)


def _ids(objects: dict[int, Any]) -> list[str]:
    """The object ids of ``{index: object}`` in index order (as a mask file names them)."""
    return [str(_field(objects[i], "object_id", "") or "") for i in sorted(objects)]


def _matching_pair(config: Any, store: _Store, image_id: str, clashing: frozenset[str],
                   attempts: int = 5, wait_s: float = 0.2
                   ) -> tuple[Any, np.ndarray, dict[int, Any]] | None:
    """(record, label map, {index: object}) of one image read again until the mask file names
    exactly the objects the store holds (a completion being written settles within its
    transaction); None when they still differ after ``attempts`` reads."""
    path = mask_path(config.destination, image_id, config.mask_suffix, config.save_format,
                     clashing)
    for attempt in range(attempts):
        if attempt:
            time.sleep(wait_s)
        objects = {int(_field(o, "index")): o for o in store.objects(image_id)}
        try:
            lm, file_ids = load_label_map(path), label_map_object_ids(path)
        except MaskFileError:
            continue
        if file_ids is None or file_ids == _ids(objects):
            record = store.get(image_id) if hasattr(store, "get") else None
            return record if record is not None else {"id": image_id}, lm, objects
    return None


def _entries_masks(config: Any, store: _Store, status: str, save_format: str,
                   progress: ProgressCallback | None, result: ExportResult
                   ) -> Iterator[tuple[str, bytes]]:
    records = _selected_images(store, status)
    clashing = _clashing(store)
    legend: list[tuple[str, int, str]] = []
    for record, lm, file_ids in _iter_label_maps(config, records, result.warnings, progress,
                                                 clashing):
        image_id = str(_field(record, "id"))
        rel = PurePosixPath(*mask_path(".", image_id, config.mask_suffix, save_format,
                                       clashing).parts).as_posix()
        result.images += 1
        result.objects += int(lm.max())
        legend += _legend_rows(store, rel, image_id, int(lm.max()), file_ids)
        yield rel, encode_label_map(lm, save_format)
    yield LEGEND_NAME, _legend_csv(legend)


#: The masks export's legend: which class each object id of each mask file is.
LEGEND_NAME = "legend.csv"


def _legend_rows(store: _Store, mask_file: str, image_id: str, n: int,
                 file_ids: list[str] | None) -> list[tuple[str, int, str]]:
    """(mask file, object id 1..n, class) of one label map: by the object ids the file names
    when it names them, else by the objects' order; "?" for a value the store has no object
    for."""
    objects = list(store.objects(image_id)) if hasattr(store, "objects") else []
    by_id = {str(_field(o, "object_id", "") or ""): str(_field(o, "label")) for o in objects}
    by_index = {int(_field(o, "index")): str(_field(o, "label")) for o in objects}
    rows = []
    for value in range(1, n + 1):
        if file_ids is not None and value <= len(file_ids) and file_ids[value - 1] in by_id:
            label = by_id[file_ids[value - 1]]
        else:
            label = by_index.get(value, "?")
        rows.append((mask_file, value, label))
    return rows


def _legend_csv(rows: list[tuple[str, int, str]]) -> bytes:
    """``mask_file,id,class`` then one line per object (CSV, UTF-8)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("mask_file", "id", "class"))
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def _entries_palette(config: Any, store: _Store, status: str,
                     progress: ProgressCallback | None, result: ExportResult
                     ) -> Iterator[tuple[str, bytes]]:
    records = _selected_images(store, status)
    clashing = _clashing(store)
    for record, lm, _ in _iter_label_maps(config, records, result.warnings, progress, clashing):
        image_id = str(_field(record, "id"))
        rel = PurePosixPath(image_id)
        result.images += 1
        result.objects += int(lm.max())
        base = rel.name if image_id in clashing else rel.stem  # as the mask files are named
        yield rel.with_name(f"{base}.png").as_posix(), palette_png(lm)


def _export_images(config: Any, store: _Store, records: list[Any],
                   progress: ProgressCallback | None, result: ExportResult
                   ) -> Iterator[ExportImage]:
    """The selected images with their label maps and class names (YOLO, VOC; the formats count
    what they write into ``result``)."""
    labels = list(config.labels)
    for record, lm, objects in _paired_label_maps(config, store, records, result.warnings,
                                                  progress):
        image_id = str(_field(record, "id"))
        classes = []
        for index in range(1, int(lm.max()) + 1):
            obj = objects.get(index)
            if obj is None:
                result.warnings.append(f"{image_id}: object {index} has no record in the "
                                       f"progress store; exported as {labels[0]!r}")
            classes.append(str(_field(obj, "label", "") or labels[0]) if obj else labels[0])
        yield ExportImage(image_id, Path(config.source) / image_id, lm, tuple(classes))


def _dataset_entries(config: Any, store: _Store, fmt: str, status: str, link: bool,
                     root: Path | None, tolerance: float, progress: ProgressCallback | None,
                     result: ExportResult) -> Iterator[tuple[str, bytes | PhotoFile]]:
    from .formats.voc import voc_entries
    from .formats.yolo import yolo_entries

    records = _selected_images(store, status)
    ids = [str(_field(r, "id")) for r in records]
    images = _export_images(config, store, records, progress, result)
    if fmt == "yolo":
        yield from yolo_entries(images, ids, config.labels, result, link=link, root=root,
                                tolerance=tolerance)
    else:
        yield from voc_entries(images, ids, config.labels, result, link=link)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_keeping_old(built: Path, out: Path) -> None:
    """Put the complete new export ``built`` at ``out``; an old export there is moved aside
    first and removed only once the new one is in place (put back if that rename fails)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{_dt.datetime.now():%H%M%S%f}")
        os.replace(out, old)
    try:
        os.replace(built, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                old.unlink()
    _fsync_dir(out.parent)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_zip(out: Path, entries: Iterable[tuple[str, bytes | PhotoFile]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries:
                # PNGs are compressed already; store them as they are
                kind = zipfile.ZIP_STORED if name.endswith((".png", ".jpg")) \
                    else zipfile.ZIP_DEFLATED
                if isinstance(data, PhotoFile):  # a link cannot live in a zip: a copy
                    zf.write(data.path, name, compress_type=zipfile.ZIP_STORED)
                else:
                    zf.writestr(name, data, compress_type=kind)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600
        _replace_keeping_old(Path(tmp), out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_folder(out: Path, entries: Iterable[tuple[str, bytes | PhotoFile]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it 0700: others could not read it
        # The folder as a whole is what appears atomically (one rename below), so its files are
        # written plainly: an fsync per file would make a 10,000-image export crawl.
        for name, data in entries:
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, PhotoFile) and data.link:
                os.symlink(_real(data.path), path)
            elif isinstance(data, PhotoFile):
                shutil.copyfile(data.path, path)
            else:
                path.write_bytes(data)
        (tmp / MARKER_NAME).write_text("Written by python -m dextr_core.export; the export "
                                       "replaces this folder only while this file is here.\n")
        _replace_keeping_old(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _real(path: Any) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def check_target(config: Any, out: str | os.PathLike) -> Path:
    """The absolute export path for ``out``, or :class:`ExportError` when an export (or an
    overwrite) there could touch what the tool reads or manages (see the module docstring)."""
    target = Path(out).expanduser().absolute()
    real = _real(target)
    progress = getattr(config, "progress_file", None)
    legacy = getattr(config, "legacy_progress_file", None)
    cfg_file = getattr(config, "path", None)
    folders: list[tuple[Path, str, bool]] = [
        (_real(config.source), "required.source (the photos)", True),
        (_real(config.destination), "required.destination (the masks)", True),
    ]
    cfg_dir = _real(cfg_file).parent if cfg_file is not None else None
    if cfg_dir is not None:
        folders.append((cfg_dir, "the config file's folder", False))
    if progress is not None:
        folder = _real(progress).parent
        folders.append((folder, "the progress file's folder (admin.progress_file)",
                        folder != cfg_dir))
    for folder, what, no_inside in folders:
        if real == folder or real in folder.parents:
            raise ExportError(f"export path {target} is or contains {what} ({folder}); an export "
                              "there could replace it. Choose a path outside it, e.g. a new "
                              "folder next to the config file")
        if no_inside and folder in real.parents:
            raise ExportError(f"export path {target} is inside {what} ({folder}); choose a path "
                              "outside the folders the tool manages")
    files = [(cfg_file, "the config file")]
    if progress is not None:
        files.append((progress, "the progress file"))
    if legacy is not None:
        files.append((legacy, "DEXTR-AnnoTool's progress file"))
    for path, what in files:
        if path is None:
            continue
        p = _real(path)
        if real == p or (what == "the progress file" and real.parent == p.parent
                         and real.name.startswith(p.name)):
            raise ExportError(f"export path {target} is {what} ({p}) or one of its companion "
                              "files; choose another path")
    return target


def _check_replaceable_folder(target: Path) -> None:
    if not target.is_dir() or (target / MARKER_NAME).is_file():
        return
    if any(target.iterdir()):
        raise ExportError(f"{target} is a folder that was not written by an export (it has no "
                          f"{MARKER_NAME} file); --overwrite replaces only exports. Choose "
                          "another --out, or empty or remove that folder yourself")


def run_export(
    config: Any,
    store: _Store,
    fmt: str,
    out: str | os.PathLike,
    *,
    status: str = "done",
    as_zip: bool = False,
    overwrite: bool = False,
    save_format: str | None = None,
    progress: ProgressCallback | None = None,
    segmentation: str = "rle",
    polygon_tolerance: float = DEFAULT_TOLERANCE,
    link: bool = False,
) -> ExportResult:
    """Export the images with ``status`` to ``out`` and return what was written.

    ``fmt``: "coco" (one JSON file; inside a zip as ``annotations.json``), "masks" (one label map
    per image, mirroring sub-folders, named like the destination's files, in ``save_format``:
    "png" | "npy", default the config's; ``legend.csv`` gives each file's object ids' classes),
    "palette" (one mode-P PNG per image, ``a/b/img.png``),
    "yolo" or "voc" (a dataset folder, :mod:`dextr_core.formats.yolo` / ``.voc``).
    ``as_zip``: write one ``.zip`` file at ``out`` instead. ``segmentation`` ("rle" | "polygon")
    and ``polygon_tolerance`` (pixels): the COCO masks and the YOLO outlines. ``link``: YOLO/VOC
    photos as symbolic links to the source instead of copies (a folder export only).
    ``progress(done, total)`` is called after each image. Raises :class:`ExportError` when ``out`` exists and ``overwrite`` is false,
    when ``out`` could touch what the tool reads or manages (:func:`check_target`), or when an
    existing folder at ``out`` is not an earlier export. The previous export at ``out`` stays
    intact until the new one is complete; if the export fails, it is still there, unchanged.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if segmentation not in SEGMENTATIONS:
        raise ExportError(f"unknown segmentation {segmentation!r}; use rle or polygon")
    if not polygon_tolerance >= 0:
        raise ExportError(f"the polygon tolerance is in pixels and >= 0, got {polygon_tolerance}")
    if link and (as_zip or fmt not in ("yolo", "voc")):
        raise ExportError("--link makes the photos of a yolo or voc folder export links to the "
                          "source; leave it out for this export (a zip holds copies)")
    save_format = save_format or config.save_format
    if save_format not in ("png", "npy"):
        raise ExportError(f"unknown mask format {save_format!r}; use png or npy")
    target = check_target(config, out)
    if target.exists() and not overwrite:
        raise ExportError(f"{target} already exists; choose another --out or pass --overwrite to "
                          "replace it")
    if target.exists() and not as_zip and fmt != "coco" and not target.is_dir():
        raise ExportError(f"{target} is a file; a {fmt} export is a folder (or use --zip)")
    if target.is_dir() and (as_zip or fmt == "coco"):
        raise ExportError(f"{target} is a folder; this export is one file: choose a file name")
    _check_replaceable_folder(target)
    result = ExportResult(path=target, format=fmt)

    if fmt == "coco":
        overlaps: list[int] = []
        dataset = coco_dataset(config, store, status=status, progress=progress,
                               warnings=result.warnings, segmentation=segmentation,
                               polygon_tolerance=polygon_tolerance,
                               summary_counts=result.counts, overlaps=overlaps)
        result.shared_pixels, result.overlapping_images = sum(overlaps), len(overlaps)
        result.images = len(dataset["images"])
        result.objects = len(dataset["annotations"])
        data = json.dumps(dataset, separators=(",", ":")).encode("utf-8")
        if as_zip:
            _write_zip(target, [("annotations.json", data)])
        else:
            atomic_write(target, data)
        return result

    if fmt == "masks":
        entries = _entries_masks(config, store, status, save_format, progress, result)
    elif fmt in ("yolo", "voc"):
        entries = _dataset_entries(config, store, fmt, status, link,
                                   None if as_zip else target, polygon_tolerance, progress,
                                   result)
    else:
        entries = _entries_palette(config, store, status, progress, result)
    if as_zip:
        _write_zip(target, entries)
    else:
        _write_folder(target, entries)
    return result


def _open_store(config: Any, scratch: Path) -> tuple[Any, list[str]]:
    """The progress store of ``config`` and notes to print about it.

    Before the app has made a store, a folder of DEXTR-AnnoTool (its progress file in the source
    folder) exports as it is: a store in ``scratch`` (a temporary folder, removed afterwards)
    imports the file and its masks, and the notes are what that import said (e.g. that the
    file's ``required:`` paths are not this config's). Nothing is written beside the photos.
    """
    from .store import ProgressStore, config_options, open_store

    location = str(config.database or config.progress_file)
    options = config_options(config)
    if "://" in location or Path(location).is_file():
        return open_store(location, config.source, **options), []
    legacy = config.legacy_progress_file
    if legacy is None or not Path(legacy).is_file():
        raise ExportError(f"no progress file at {location}: nothing has been "
                          "annotated with this config yet (check admin.progress_file)")
    store = ProgressStore(scratch / "progress.json", config.source, **options)
    return store, store.sync().lines()


def main(argv: list[str] | None = None) -> int:
    """``python -m dextr_core.export``: see the module docstring; returns the exit status."""
    from .config import ConfigError, load_config

    parser = argparse.ArgumentParser(
        prog="python -m dextr_core.export",
        description="Export finished DEXTR annotations (COCO JSON, label maps, palette PNGs, "
                    "YOLO segmentation or Pascal VOC).")
    parser.add_argument("--config", default="anno_cfg.yml", help="annotation config (YAML)")
    parser.add_argument("--format", choices=FORMATS, required=True, dest="fmt")
    parser.add_argument("--out", required=True, help="output file (coco, --zip) or folder")
    parser.add_argument("--zip", action="store_true", help="write one .zip file")
    parser.add_argument("--status", default="done", choices=STATUSES,
                        help="which images to export (default: done; approved: done and "
                             "approved by a lead in review)")
    parser.add_argument("--mask-format", choices=("png", "npy"), default=None,
                        help="file format for --format masks (default: the config's save_format)")
    parser.add_argument("--segmentation", choices=SEGMENTATIONS, default="rle",
                        help="COCO masks as RLE (default) or polygons (objects with holes keep "
                             "RLE)")
    parser.add_argument("--polygon-tolerance", type=float, default=DEFAULT_TOLERANCE,
                        metavar="PX", help="largest distance in pixels between an outline and "
                        f"its polygon (coco polygons, yolo; default {DEFAULT_TOLERANCE})")
    parser.add_argument("--link", action="store_true",
                        help="yolo/voc: link the photos instead of copying them")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    stack = contextlib.ExitStack()  # the store, then its scratch folder, closed at the end
    try:
        config = load_config(args.config)
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dextr-export-")))
        store, notes = _open_store(config, scratch)
        stack.callback(store.close)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        from tqdm import tqdm

        with tqdm(total=0, unit="image", desc=f"export {args.fmt}") as bar:
            def progress(done: int, total: int) -> None:
                if bar.total != total:
                    bar.reset(total=total)
                bar.update(done - bar.n)

            result = run_export(config, store, args.fmt, args.out, status=args.status,
                                as_zip=args.zip, overwrite=args.overwrite,
                                save_format=args.mask_format, progress=progress,
                                segmentation=args.segmentation,
                                polygon_tolerance=args.polygon_tolerance, link=args.link)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (DextrError, OSError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.close()
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
