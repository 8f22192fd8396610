"""Exports of finished annotations: COCO instances JSON, per-image label maps, palette previews.

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

Command line::

    python -m dextr_core.export --config anno_cfg.yml --format coco --out export/instances.json
    python -m dextr_core.export --config anno_cfg.yml --format palette --out preview --zip
"""

from __future__ import annotations

import argparse
import colorsys
import contextlib
import datetime as _dt
import io
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
from PIL import Image

from .errors import DextrError
from .masks import (
    MaskFileError,
    atomic_write,
    encode_label_map,
    load_label_map,
    load_object_mask,
    mask_path,
    object_mask_path,
    shared_pixels,
)

#: Export formats: COCO instances JSON, per-image label maps (DEXTR-AnnoTool layout), palette PNGs.
FORMATS = ("coco", "masks", "palette")
#: Image statuses an export can select; "all" takes every image that has a mask file.
STATUSES = ("done", "skipped", "in_progress", "todo", "all")

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
    records = store.images() if status == "all" else store.images(status=status)
    return sorted(records, key=lambda r: str(_field(r, "id")))


def _iter_label_maps(
    config: Any,
    records: list[Any],
    warnings: list[str],
    progress: ProgressCallback | None,
) -> Iterator[tuple[Any, np.ndarray]]:
    """(image record, label map) for each selected image whose mask file can be read."""
    total = len(records)
    for n, record in enumerate(records, start=1):
        image_id = str(_field(record, "id"))
        path = mask_path(config.destination, image_id, config.mask_suffix, config.save_format)
        try:
            if path.is_file():
                yield record, load_label_map(path)
            elif _field(record, "status") == "done":
                warnings.append(f"{image_id}: no mask file {path}; reopen the image and annotate "
                                "it again")
        except MaskFileError as exc:
            warnings.append(f"{image_id}: {exc}")
        finally:
            if progress is not None:
                progress(n, total)


def _object_masks(config: Any, image_id: str, lm: np.ndarray, objects: dict[int, Any]
                  ) -> dict[int, np.ndarray]:
    """Each object's own bool (H, W) mask by index: its object file, else its label in ``lm``."""
    count = max([int(lm.max())] + list(objects))
    found = {}
    for index in range(1, count + 1):
        obj = objects.get(index)
        object_id = str(_field(obj, "object_id", "") or "") if obj is not None else ""
        own = load_object_mask(object_mask_path(config.destination, image_id, object_id),
                               lm.shape) if object_id else None
        found[index] = own if own is not None else lm == index
    return found


def coco_dataset(
    config: Any,
    store: _Store,
    *,
    status: str = "done",
    progress: ProgressCallback | None = None,
    warnings: list[str] | None = None,
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
    """
    from pycocotools import mask as mask_utils

    warnings = [] if warnings is None else warnings
    labels = list(config.labels)
    category_ids = {name: i for i, name in enumerate(labels, start=1)}
    images: list[dict] = []
    annotations: list[dict] = []
    records = _selected_images(store, status)
    by_image: dict[str, dict[int, Any]] = {}
    for obj in store.objects():  # one read of every object instead of one call per image
        by_image.setdefault(str(_field(obj, "image_id")), {})[int(_field(obj, "index"))] = obj
    for record, lm in _iter_label_maps(config, records, warnings, progress):
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
        objects = by_image.get(image_id, {})
        own = _object_masks(config, image_id, lm, objects)
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
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": coco_image_id,
                "category_id": category_ids[label],
                "segmentation": {"size": [int(height), int(width)], "counts": rle["counts"]},
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


def _entries_masks(config: Any, store: _Store, status: str, save_format: str,
                   progress: ProgressCallback | None, result: ExportResult
                   ) -> Iterator[tuple[str, bytes]]:
    records = _selected_images(store, status)
    for record, lm in _iter_label_maps(config, records, result.warnings, progress):
        image_id = str(_field(record, "id"))
        rel = mask_path(".", image_id, config.mask_suffix, save_format)
        result.images += 1
        result.objects += int(lm.max())
        yield PurePosixPath(*rel.parts).as_posix(), encode_label_map(lm, save_format)


def _entries_palette(config: Any, store: _Store, status: str,
                     progress: ProgressCallback | None, result: ExportResult
                     ) -> Iterator[tuple[str, bytes]]:
    records = _selected_images(store, status)
    for record, lm in _iter_label_maps(config, records, result.warnings, progress):
        image_id = str(_field(record, "id"))
        rel = PurePosixPath(image_id)
        result.images += 1
        result.objects += int(lm.max())
        yield rel.with_name(f"{rel.stem}.png").as_posix(), palette_png(lm)


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


def _write_zip(out: Path, entries: Iterable[tuple[str, bytes]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries:
                # PNGs are compressed already; store them as they are
                kind = zipfile.ZIP_STORED if name.endswith(".png") else zipfile.ZIP_DEFLATED
                zf.writestr(name, data, compress_type=kind)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600
        _replace_keeping_old(Path(tmp), out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_folder(out: Path, entries: Iterable[tuple[str, bytes]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it 0700: others could not read it
        # The folder as a whole is what appears atomically (one rename below), so its files are
        # written plainly: an fsync per file would make a 10,000-image export crawl.
        for name, data in entries:
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
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
) -> ExportResult:
    """Export the images with ``status`` to ``out`` and return what was written.

    ``fmt``: "coco" (one JSON file; inside a zip as ``annotations.json``), "masks" (one label map
    per image, mirroring sub-folders, named like the destination's files, in ``save_format``:
    "png" | "npy", default the config's) or "palette" (one mode-P PNG per image, ``a/b/img.png``).
    ``as_zip``: write one ``.zip`` file at ``out`` instead. ``progress(done, total)`` is called
    after each image. Raises :class:`ExportError` when ``out`` exists and ``overwrite`` is false,
    when ``out`` could touch what the tool reads or manages (:func:`check_target`), or when an
    existing folder at ``out`` is not an earlier export. The previous export at ``out`` stays
    intact until the new one is complete; if the export fails, it is still there, unchanged.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
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
                               warnings=result.warnings, overlaps=overlaps)
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
    else:
        entries = _entries_palette(config, store, status, progress, result)
    if as_zip:
        _write_zip(target, entries)
    else:
        _write_folder(target, entries)
    return result


def _open_store(config: Any):
    from .store import open_store

    location = str(config.database or config.progress_file)
    if "://" not in location and not Path(location).is_file():
        raise ExportError(f"no progress file at {location}: nothing has been "
                          "annotated with this config yet (check admin.progress_file)")
    return open_store(location, config.source,
                      claim_timeout_s=float(config.claim_timeout_min) * 60.0)


def main(argv: list[str] | None = None) -> int:
    """``python -m dextr_core.export``: see the module docstring; returns the exit status."""
    from .config import ConfigError, load_config

    parser = argparse.ArgumentParser(
        prog="python -m dextr_core.export",
        description="Export finished DEXTR annotations (COCO JSON, label maps or palette PNGs).")
    parser.add_argument("--config", default="anno_cfg.yml", help="annotation config (YAML)")
    parser.add_argument("--format", choices=FORMATS, required=True, dest="fmt")
    parser.add_argument("--out", required=True, help="output file (coco, --zip) or folder")
    parser.add_argument("--zip", action="store_true", help="write one .zip file")
    parser.add_argument("--status", default="done", choices=STATUSES,
                        help="which images to export (default: done)")
    parser.add_argument("--mask-format", choices=("png", "npy"), default=None,
                        help="file format for --format masks (default: the config's save_format)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        store = _open_store(config)
        from tqdm import tqdm

        with tqdm(total=0, unit="image", desc=f"export {args.fmt}") as bar:
            def progress(done: int, total: int) -> None:
                if bar.total != total:
                    bar.reset(total=total)
                bar.update(done - bar.n)

            result = run_export(config, store, args.fmt, args.out, status=args.status,
                                as_zip=args.zip, overwrite=args.overwrite,
                                save_format=args.mask_format, progress=progress)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (DextrError, OSError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {result.path}: {result.images} images, {result.objects} objects "
          f"({len(result.warnings)} warnings)")
    if result.shared_pixels:
        print(f"{result.shared_pixels} pixels are shared by overlapping objects in "
              f"{result.overlapping_images} images (each object keeps them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
