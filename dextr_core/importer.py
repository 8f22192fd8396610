"""Import existing annotations as objects to check and correct: ``python -m dextr_core.importer``.

Sources: a COCO instances file (``--coco FILE``: RLE, compressed RLE or polygons) or a folder of
label maps in this tool's own layout (``--masks DIR``: ``<DIR>/<sub>/<stem><mask_suffix>.png``
or ``.npy``, 0 = background, i = object i). Photos are matched by ``file_name`` relative to the
source folder, else by a base name that only one photo has; objects are labelled by category
name (a label map has no names: its objects get the config's first label).

Rules:

* The whole source is read and checked first; a malformed file (bad JSON, a missing key, an
  annotation of an unknown image or category, a mask of the wrong size, a category name not in
  ``optional.labels`` without ``--add-labels``) is refused with the reason and nothing is written.
* ``--add-labels`` appends the missing names to ``optional.labels`` in the config file (rewritten
  atomically, its comments kept, checked to read back the same but for the labels) before the
  photos are touched.
* Only photos that are todo and have no objects get objects; photos in progress, done, skipped,
  unreadable or with other objects are left alone and listed, unknown photos are listed.
* Each object keeps its source id (``coco-<annotation id>``, ``mask-<label>``): importing the same
  source again adds nothing. Its mask is written as its own object mask file, like an accepted
  object (``points`` ``[]``); the annotate page lists it with Delete, and *Image done* builds the
  mask file from it. ``--status done`` imports the photos as finished (the label map is written
  as *Image done* writes it).
* Photos are written one at a time (object masks, then one store transaction): if the import
  stops halfway, the photos before are imported, the rest are not, and running the same command
  again imports the rest.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .errors import DextrError
from .fileio import atomic_write
from .masks import (
    SAVE_FORMATS,
    MaskFileError,
    label_map,
    load_label_map,
    mask_path,
    object_mask_path,
    save_label_map,
    save_object_mask,
)

#: What an import may make of the photos it fills in.
IMPORT_STATUSES = ("todo", "done")
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,59}")


class ImportFileError(DextrError):
    """A source that cannot be imported; nothing was written. The message says why and what to do."""


@dataclass
class PlannedObject:
    """One object to import: ``object_id`` (from its source id), ``label``, ``decode()`` -> bool
    (H, W) mask."""

    object_id: str
    label: str
    decode: Callable[[], np.ndarray]


@dataclass
class ImportResult:
    """What an import did: photos given objects (id -> count), photos left alone with why,
    source names that match no photo, labels added to the config."""

    imported: dict[str, int] = field(default_factory=dict)
    already: list[str] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    labels_added: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The summary, one fact a line (the first line counts what was imported)."""
        out = [f"imported {sum(self.imported.values())} objects into {len(self.imported)} "
               f"photos; {len(self.already)} photos already imported, {len(self.left_alone)} "
               f"left alone, {len(self.unknown)} unknown"]
        if self.labels_added:
            out.append(f"labels added to the config: {', '.join(self.labels_added)}")
        if self.left_alone:
            out.append("left alone (already being worked on or finished): "
                       + _first(self.left_alone))
        if self.unknown:
            out.append("no such photo in the source folder: " + _first(self.unknown))
        return out + self.notes


def _first(items: list[str], n: int = 10) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _object_id(prefix: str, source_id: Any) -> str:
    text = str(source_id)
    if _ID_RE.fullmatch(text):
        return f"{prefix}-{text}"
    return f"{prefix}-h{hashlib.sha1(text.encode('utf-8')).hexdigest()[:16]}"


# ---- reading the sources -------------------------------------------------------------------


def _resolver(image_ids: list[str]) -> Callable[[str], str | None]:
    known = set(image_ids)
    by_name: dict[str, list[str]] = defaultdict(list)
    for image_id in image_ids:
        by_name[PurePosixPath(image_id).name].append(image_id)

    def resolve(name: str) -> str | None:
        rel = str(name).replace("\\", "/").removeprefix("./")
        if rel in known:
            return rel
        matches = by_name.get(PurePosixPath(rel).name, [])
        return matches[0] if len(matches) == 1 else None

    return resolve


def _refuse(source: Path, reason: str) -> ImportFileError:
    return ImportFileError(f"{source} cannot be imported: {reason}. Nothing was written; fix the "
                           "file and run the import again")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coco_segmentation(source: Path, ann: dict, height: int, width: int
                       ) -> tuple[Callable[[], np.ndarray], bool]:
    """``(decoder, empty)``: a checked decoder of one annotation's mask (polygons, RLE or
    compressed RLE) and whether that mask is empty."""
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation")
    where = f"annotation {ann.get('id')!r}"
    if isinstance(seg, list):
        if not seg or not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                              and all(isinstance(v, int | float) for v in p) for p in seg):
            raise _refuse(source, f"{where} has a polygon segmentation that is not lists of at "
                          "least 3 x, y pairs of numbers")
        polygons = [[float(v) for v in p] for p in seg]

        def decode() -> np.ndarray:
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
            return mask_utils.decode(rle).astype(bool)
    elif isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
            raise _refuse(source, f"{where} has an RLE without size [height, width]")
        if list(size) != [height, width]:
            raise _refuse(source, f"{where} has an RLE of size {size} but its image is "
                          f"{height} x {width} (height x width)")
        if isinstance(counts, list):
            if not all(_is_int(v) and v >= 0 for v in counts) or sum(counts) != height * width:
                raise _refuse(source, f"{where} has RLE counts that do not add up to the "
                              f"image's {height * width} pixels")
            rle = mask_utils.frPyObjects(seg, height, width)
        elif isinstance(counts, str):
            rle = {"size": [height, width], "counts": counts.encode("ascii", "replace")}
        else:
            raise _refuse(source, f"{where} has RLE counts that are neither a list nor a string")

        def decode() -> np.ndarray:
            return mask_utils.decode(rle).astype(bool)
    else:
        raise _refuse(source, f"{where} has no segmentation (polygons or RLE)")
    try:
        mask = decode()
    except Exception as exc:  # pycocotools raises plain Exceptions on bad input
        raise _refuse(source, f"{where}: its mask cannot be decoded ({exc})") from exc
    if mask.shape != (height, width):
        raise _refuse(source, f"{where}: its mask decodes to {mask.shape[1]} x {mask.shape[0]} "
                      f"px, not the image's {width} x {height}")
    return decode, not mask.any()


def plan_coco(source: Path, image_ids: list[str], sizes: dict[str, tuple[int, int]]
              ) -> tuple[dict[str, list[PlannedObject]], list[str], list[str]]:
    """Read and check a COCO instances file: ``({photo id: objects}, unknown file names,
    notes)`` (annotations with empty masks are left out and noted). ``sizes``: photo id -> (width, height) as the store knows them. Raises
    :class:`ImportFileError` with the reason for anything malformed."""
    try:
        data = json.loads(Path(source).read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise ImportFileError(f"cannot read {source} ({exc.strerror or exc}); check the path") \
            from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(source, f"it is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise _refuse(source, "it is not a COCO object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise _refuse(source, f"it has no {key!r} list (a COCO instances file has images, "
                          "annotations and categories)")
    categories: dict[Any, str] = {}
    for cat in data["categories"]:
        if not (isinstance(cat, dict) and "id" in cat and isinstance(cat.get("name"), str)
                and cat["name"].strip()):
            raise _refuse(source, f"category {cat!r} needs an id and a name")
        if cat["id"] in categories:
            raise _refuse(source, f"category id {cat['id']!r} appears twice")
        categories[cat["id"]] = cat["name"].strip()
    images: dict[Any, dict] = {}
    for img in data["images"]:
        if not (isinstance(img, dict) and "id" in img and isinstance(img.get("file_name"), str)
                and _is_int(img.get("width")) and _is_int(img.get("height"))
                and img["width"] > 0 and img["height"] > 0):
            raise _refuse(source, f"image {str(img)[:120]} needs an id, a file_name and a "
                          "positive width and height")
        if img["id"] in images:
            raise _refuse(source, f"image id {img['id']!r} appears twice")
        images[img["id"]] = img
    resolve = _resolver(image_ids)
    photo_of: dict[Any, str | None] = {k: resolve(v["file_name"]) for k, v in images.items()}
    unknown = sorted({v["file_name"] for k, v in images.items() if photo_of[k] is None})
    for key, image_id in photo_of.items():
        if image_id is None:
            continue
        w, h = images[key]["width"], images[key]["height"]
        if sizes.get(image_id) and tuple(sizes[image_id]) != (w, h):
            raise _refuse(source, f"image {images[key]['file_name']!r} is {w} x {h} px in the "
                          f"file but the photo {image_id} is {sizes[image_id][0]} x "
                          f"{sizes[image_id][1]}; is this the right file for these photos?")
    plan: dict[str, list[PlannedObject]] = defaultdict(list)
    seen: set = set()
    empty: list[str] = []
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or "id" not in ann:
            raise _refuse(source, f"annotation {str(ann)[:120]} has no id")
        if ann["id"] in seen:
            raise _refuse(source, f"annotation id {ann['id']!r} appears twice")
        seen.add(ann["id"])
        if ann.get("image_id") not in images:
            raise _refuse(source, f"annotation {ann['id']!r} names image "
                          f"{ann.get('image_id')!r}, which is not in 'images'")
        if ann.get("category_id") not in categories:
            raise _refuse(source, f"annotation {ann['id']!r} names category "
                          f"{ann.get('category_id')!r}, which is not in 'categories'")
        img = images[ann["image_id"]]
        decode, is_empty = _coco_segmentation(source, ann, img["height"], img["width"])
        image_id = photo_of[ann["image_id"]]
        if is_empty:
            empty.append(str(ann["id"]))
        elif image_id is not None:
            plan[image_id].append(PlannedObject(_object_id("coco", ann["id"]),
                                                categories[ann["category_id"]], decode))
    notes = [f"{len(empty)} annotation(s) with an empty mask were not imported: "
             f"{_first(empty)}"] if empty else []
    return dict(plan), unknown, notes


def plan_masks(folder: Path, image_ids: list[str], sizes: dict[str, tuple[int, int]],
               mask_suffix: str, label: str
               ) -> tuple[dict[str, list[PlannedObject]], list[str], list[str]]:
    """Read and check a folder of label maps in this tool's layout (see the module docstring):
    ``({photo id: objects}, files that match no photo, notes)``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImportFileError(f"{folder} is not a folder; --masks takes the folder of label "
                              "maps (<stem><mask_suffix>.png or .npy)")
    plan: dict[str, list[PlannedObject]] = {}
    used: set[Path] = set()
    last: dict[Path, np.ndarray] = {}

    def read(path: Path) -> np.ndarray:  # one photo's objects are decoded together: read once
        if path not in last:
            last.clear()
            last[path] = load_label_map(path)
        return last[path]

    for image_id in image_ids:
        for fmt in SAVE_FORMATS:
            path = mask_path(folder, image_id, mask_suffix, fmt)
            if not path.is_file():
                continue
            used.add(path.resolve())
            try:
                labels = load_label_map(path)
            except MaskFileError as exc:
                raise ImportFileError(f"{exc} Nothing was imported.") from exc
            w, h = sizes.get(image_id) or (labels.shape[1], labels.shape[0])
            if labels.shape != (h, w):
                raise ImportFileError(f"{path} is {labels.shape[1]} x {labels.shape[0]} px but "
                                      f"the photo {image_id} is {w} x {h}; nothing was imported")
            objects = []
            for value in range(1, int(labels.max(initial=0)) + 1):
                if (labels == value).any():
                    objects.append(PlannedObject(
                        _object_id("mask", value), label,
                        lambda p=path, v=value: read(p) == v))
            if objects:
                plan[image_id] = objects
            break
    unknown = sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower().lstrip(".") in SAVE_FORMATS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.resolve() not in used)
    notes = [f"label maps carry no class names: objects are labelled {label!r} (the config's "
             "first label)"] if plan else []
    return plan, unknown, notes


# ---- the config's labels -------------------------------------------------------------------


def add_labels_to_config(path: Path, names: list[str]) -> None:
    """Append ``names`` to ``optional.labels`` of the config file at ``path``, keeping its
    comments and layout (ruamel.yaml round trip). The new text is checked to read back as the
    old config plus these labels, then written atomically; raises ImportFileError otherwise."""
    import yaml
    from ruamel.yaml import YAML

    text = Path(path).read_text(encoding="utf-8")
    before = yaml.safe_load(text) or {}
    rt = YAML()
    rt.preserve_quotes = True
    data = rt.load(text) or {}
    optional = data.get("optional")
    if optional is None:
        data["optional"] = optional = {}
    labels = optional.get("labels")
    if labels is None:
        optional["labels"] = [*names]
    else:
        labels.extend(names)
    buffer = io.StringIO()
    rt.dump(data, buffer)
    after = yaml.safe_load(buffer.getvalue())
    expected = dict(before)
    expected["optional"] = dict(before.get("optional") or {})
    expected["optional"]["labels"] = [*(expected["optional"].get("labels") or []), *names]
    if after != expected:
        raise ImportFileError(f"could not add the labels {', '.join(names)} to {path} safely; "
                              "add them to optional.labels yourself and run the import again")
    atomic_write(path, buffer.getvalue().encode("utf-8"))


# ---- the import ----------------------------------------------------------------------------


def run_import(config: Any, store: Any, *, coco: str | os.PathLike | None = None,
               masks: str | os.PathLike | None = None, add_labels: bool = False,
               status: str = "todo", progress: Callable[[int, int], None] | None = None
               ) -> ImportResult:
    """Import ``coco`` (a COCO instances file) or ``masks`` (a label-map folder) into ``store``
    for the photos of ``config`` (see the module docstring); return what was done.

    Raises :class:`ImportFileError` (nothing written) for a malformed source or unknown labels,
    OSError / store errors when a write fails halfway (the photos before it are imported).
    """
    from .store.imports import IMPORT_ANNOTATOR, add_imported
    from .store.records import ObjectRecord

    if (coco is None) == (masks is None):
        raise ImportFileError("give one source: --coco FILE or --masks DIR")
    if status not in IMPORT_STATUSES:
        raise ImportFileError(f"--status must be todo or done, got {status!r}")
    records = {r.id: r for r in store.images()}
    image_ids = sorted(records)
    sizes = {i: (r.width, r.height) for i, r in records.items() if r.width and r.height}
    if coco is not None:
        plan, unknown, notes = plan_coco(Path(coco), image_ids, sizes)
        source = Path(coco).name
    else:
        plan, unknown, notes = plan_masks(Path(masks), image_ids, sizes, config.mask_suffix,
                                          config.labels[0])
        source = f"{Path(masks).name}/"
    engine = f"imported from {source}"
    result = ImportResult(unknown=unknown, notes=notes)
    missing = sorted({o.label for objs in plan.values() for o in objs} - set(config.labels))
    if missing and not add_labels:
        raise ImportFileError(
            f"{len(missing)} category name(s) of {source} are not in optional.labels of "
            f"{config.path}: {', '.join(missing)}. Add them there, or run again with "
            "--add-labels to append them. Nothing was written")
    if missing:
        add_labels_to_config(Path(config.path), missing)
        result.labels_added = missing
    destination = Path(config.destination)
    total = len(plan)
    for n, image_id in enumerate(sorted(plan), start=1):
        record = store.get(image_id)
        objects = plan[image_id]
        if record is not None and record.status == "todo" and not record.missing \
                and not store.objects(image_id):
            masks_now = {o.object_id: o.decode() for o in objects}
            for object_id, mask in masks_now.items():
                save_object_mask(object_mask_path(destination, image_id, object_id), mask)
            shape = next(iter(masks_now.values())).shape

            def write(stored, image_id=image_id, masks_now=masks_now, shape=shape) -> None:
                save_label_map(mask_path(destination, image_id, config.mask_suffix,
                                         config.save_format),
                               label_map([masks_now[o.object_id] for o in stored], shape))

            outcome = add_imported(
                store, image_id,
                [ObjectRecord(label=o.label, engine=engine, annotator=IMPORT_ANNOTATOR,
                              object_id=o.object_id) for o in objects],
                done=status == "done", source=source, write=write)
        else:
            outcome = add_imported(store, image_id, [
                ObjectRecord(object_id=o.object_id, label=o.label) for o in objects])
        if outcome == "added":
            result.imported[image_id] = len(objects)
        elif outcome == "already imported" or (
                record is not None and record.status == "done"
                and record.annotator == IMPORT_ANNOTATOR):
            result.already.append(image_id)
        else:
            result.left_alone.append(f"{image_id} ({outcome.replace('_', ' ')})")
        if progress is not None:
            progress(n, total)
    return result


def _store_for(config: Any):
    from .store import open_store

    store = open_store(config.database or config.progress_file, config.source,
                       claim_timeout_s=float(config.claim_timeout_min) * 60.0,
                       exclude_dirs=(config.destination,), mask_suffix=config.mask_suffix,
                       save_format=config.save_format, destination=config.destination,
                       labels=tuple(config.labels), legacy_file=config.legacy_progress_file)
    store.sync()
    return store


def main(argv: list[str] | None = None) -> int:
    """``python -m dextr_core.importer`` (console script ``dextr-import``); the exit status."""
    from .config import ConfigError, load_config

    parser = argparse.ArgumentParser(
        prog="python -m dextr_core.importer",
        description="Import existing annotations (COCO instances or label maps) as objects to "
                    "check and correct.")
    parser.add_argument("--config", default="anno_cfg.yml", help="annotation config (YAML)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--coco", help="COCO instances JSON (RLE, compressed RLE or polygons)")
    source.add_argument("--masks", help="folder of label maps (<stem><mask_suffix>.png/.npy)")
    parser.add_argument("--add-labels", action="store_true",
                        help="append category names missing from optional.labels to the config")
    parser.add_argument("--status", choices=IMPORT_STATUSES, default="todo",
                        help="todo (default): to be checked on the annotate page; done: finished")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        store = _store_for(config)
        try:
            result = run_import(config, store, coco=args.coco, masks=args.masks,
                                add_labels=args.add_labels, status=args.status)
        finally:
            store.close()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (DextrError, OSError) as exc:
        print(f"import failed: {exc}", file=sys.stderr)
        if not isinstance(exc, ImportFileError):
            print("The photos imported before this are kept; run the same command again to "
                  "import the rest (nothing is added twice).", file=sys.stderr)
        return 1
    for line in result.lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
