"""Store maintenance: scanning the source folder, the DEXTR-AnnoTool import, reset, reconcile.

These are the store's jobs that are not one annotator's work on one image. Each function takes the
:class:`~dextr_core.store.rules.Store` (the methods of the same names delegate here) and works on
its :class:`~dextr_core.store.backend.Backend` only (no backend is imported here), in backend
transactions that keep other servers' maintenance out (:meth:`Backend.lock_for_maintenance`).

Scan rules (:func:`sync`)
-------------------------
* Every image file (by extension, any case) under the source folder, recursively; hidden files and
  folders (``.name``) and the folders in ``exclude_dirs`` (a destination inside the source) are
  skipped. When the source folder IS the destination (``destination`` given and equal), files
  whose stem ends with ``mask_suffix`` are the masks and are never queued.
* New files get their size from the header (:func:`dextr_core.images.image_size`, which refuses
  images over the pixel budget); a file whose header cannot be read (``ImageReadError``, or an
  ``OSError`` such as a file that vanished while scanning) is added as ``unreadable`` with the
  reason, named in the :class:`SyncReport`, and the scan goes on.

DEXTR-AnnoTool import (:func:`import_legacy`)
--------------------------------------------
The seed tool's progress file (``legacy_file``; default ``<source>/.anno_prog``; its format and
reading in :mod:`dextr_core.store.legacy`) is read, never written, on the first sync that finds
it (not after a reset): ``yes`` -> done, ``skip`` -> skipped, ``no`` -> todo. Names are matched as
paths relative to the source, else by a unique file name. Only todo images change. A file that
cannot be read or parsed, is not of that shape, or names no image of the source folder at all
is reported in the SyncReport and NOT recorded as imported: the next sync tries again. Its
``required:`` paths are compared with the store's source and destination (relative ones resolved
against ``legacy_base``, the config's folder; not compared when that is None) and each
difference is reported (:func:`~dextr_core.store.legacy.path_differences`). An image imported as
done whose mask file exists in the destination (``<stem><mask_suffix>.<save_format>``; .png or
.npy when no save_format is given) gets one object per label ``1..max`` of that mask (points
``[]``, engine ``DEXTR-AnnoTool``, label the first configured label or ``object``), so its
objects count and are exported; the mask file is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..images import ImageReadError, image_size, is_image_file
from .legacy import LegacyProgressError, path_differences, read_legacy_progress
from .records import (
    LEGACY_ANNOTATOR,
    LEGACY_PROGRESS_NAME,
    StoreInputError,
    SyncReport,
    _first,
    _new_image_doc,
)

if TYPE_CHECKING:
    from .rules import Store

__all__ = ["add_images", "import_legacy", "reconcile", "reset", "scan", "sync"]

#: Meta key: the sizes of the TIFFs known before image_size read their header size were checked.
_TIFF_SIZES_CHECKED = "tiff_sizes_checked"

#: Engine name of the objects read from DEXTR-AnnoTool's mask files.
LEGACY_ENGINE = "DEXTR-AnnoTool"


def _same_folder(a: Path | None, b: Path | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def scan(store: Store) -> list[str]:
    """The image ids found in the source folder (sorted), by the scan rules above."""
    root = store.source_dir
    if not root.is_dir():
        raise StoreInputError(
            f"The source folder {root} does not exist or is not a folder; check "
            "required.source in anno_cfg.yml."
        )
    suffix = store.mask_suffix
    skip_masks = bool(suffix) and _same_folder(root, store.destination)
    found = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".") and (here / d).resolve() not in store.exclude_dirs
        )
        rel = here.relative_to(root)
        for name in files:
            if name.startswith(".") or not is_image_file(name):
                continue
            if skip_masks and os.path.splitext(name)[0].endswith(suffix):
                continue
            found.append((PurePosixPath(*rel.parts) / name).as_posix())
    found.sort()
    return found


def sync(store: Store) -> SyncReport:
    """Scan the source folder: add new images, flag vanished ones ``missing``, import legacy.

    Image sizes are read from the headers of new files only (an unreadable header makes the
    image ``unreadable`` with the reason, and the scan goes on). The first sync that finds
    DEXTR-AnnoTool's progress file imports it, once (not after a :func:`reset`).
    """
    found = scan(store)
    backend = store.backend
    with backend.transaction():
        backend.lock_for_maintenance()
        known = set(backend.all_ids())
    new_ids = [i for i in found if i not in known]
    sizes: dict[str, tuple] = {}
    for image_id in new_ids:
        try:
            sizes[image_id] = (*image_size(store.source_dir / image_id), None)
        except (ImageReadError, OSError) as exc:
            sizes[image_id] = (None, None, str(exc))
    # sizes of known TIFFs again, once per store: they were recorded turned twice before
    # (EXIF orientation 5-8, Pillow < this check)
    with backend.transaction():
        checked = backend.meta().get(_TIFF_SIZES_CHECKED)
    tiffs: dict[str, tuple[int, int]] = {}
    for image_id in (i for i in found if not checked and i in known
                     and i.lower().endswith((".tif", ".tiff"))):
        with contextlib.suppress(ImageReadError, OSError):
            tiffs[image_id] = image_size(store.source_dir / image_id)
    report = SyncReport()
    found_set = set(found)
    with backend.transaction():
        backend.lock_for_maintenance()
        if not checked:
            backend.update_meta({_TIFF_SIZES_CHECKED: True})
        for image_id, (width, height) in tiffs.items():
            doc = store._raw(image_id)
            if doc is not None and (doc.get("width"), doc.get("height")) == (height, width):
                store._update(image_id, {"width": width, "height": height})
                report.messages.append(f"{image_id}: size corrected to {width} x {height} px "
                                       "(its EXIF orientation had been applied twice)")
        report.added = add_images(store, ((i, *sizes[i]) for i in new_ids))
        report.unreadable = [i for i in report.added if sizes[i][2]]
        report.unreadable_reasons = {i: sizes[i][2] for i in report.unreadable}
        now = store.clock()
        for image_id in sorted(set(backend.all_ids()) - found_set - set(backend.missing_ids())):
            store._update(image_id, {"missing": True, "updated_at": now})
            report.vanished.append(image_id)
        for image_id in sorted(set(backend.missing_ids()) & found_set):
            store._update(image_id, {"missing": False, "updated_at": now})
            report.reappeared.append(image_id)
        import_legacy(store, report)
        report.total = len(backend.all_ids()) - len(backend.missing_ids())
        if report.added or report.vanished or report.reappeared:
            store._log("synced", None, None, added=len(report.added),
                       vanished=len(report.vanished), reappeared=len(report.reappeared))
    return report


def add_images(store: Store, entries: Iterable[tuple]) -> list[str]:
    """Add images without scanning: ``(image_id, width, height[, error])`` each; bulk API.

    For tools and benchmarks that already know the images. Ids the store knows are left
    alone; an ``error`` makes the image ``unreadable``. Returns the ids added. A later
    :func:`sync` flags ids that are not files of the source folder as missing.
    """
    added: list[str] = []
    seen: set[str] = set()
    backend = store.backend
    with backend.transaction():
        backend.lock_for_maintenance()
        known = backend.all_ids()
        docs = []
        for entry in entries:
            image_id, width, height = entry[0], entry[1], entry[2]
            error = entry[3] if len(entry) > 3 else None
            if image_id in known or image_id in seen:
                continue
            seen.add(image_id)
            docs.append(_new_image_doc(image_id, width, height,
                                       "unreadable" if error else "todo", error))
            added.append(image_id)
        if docs:
            backend.insert_images(docs)
    return added


# ---- DEXTR-AnnoTool import ----------------------------------------------------------------------


def import_legacy(store: Store, report: SyncReport) -> None:
    """Import DEXTR-AnnoTool's progress file once (see the module docstring); inside sync."""
    meta = store.backend.meta()
    if meta.get("legacy_import") is not None or meta.get("reset_at") is not None:
        return
    explicit = store.legacy_file is not None
    legacy = store.legacy_file if explicit else store.source_dir / LEGACY_PROGRESS_NAME
    if not legacy.is_file():
        if explicit:
            report.messages.append(
                f"DEXTR-AnnoTool progress file {legacy} (admin.progress_file) was not found; "
                "nothing was imported. Check the path; the next sync tries again."
            )
        return
    try:
        progress = read_legacy_progress(legacy)
    except LegacyProgressError as exc:
        report.messages.append(
            f"DEXTR-AnnoTool progress file {legacy} {exc}; it was not imported. Fix or "
            "remove it; the next sync tries again."
        )
        return
    known = store.backend.all_ids()
    by_name: dict[str, list[str]] = defaultdict(list)
    for image_id in known:
        by_name[PurePosixPath(image_id).name].append(image_id)

    def resolve(key: str) -> str | None:
        name = key.replace("\\", "/").removeprefix("./")
        if name in known:
            return name
        matches = by_name.get(PurePosixPath(name).name, [])
        return matches[0] if len(matches) == 1 else None

    found = {key: resolve(key) for key in progress.annotated}
    unknown = [key for key, image_id in found.items() if image_id is None]
    if progress.annotated and len(unknown) == len(progress.annotated):
        report.messages.append(
            f"None of the {len(unknown)} images in DEXTR-AnnoTool progress file {legacy} is in "
            f"the source folder {store.source_dir} (e.g. {_first(unknown, 3)}), so it cannot be "
            "this folder's progress; it was not imported. Check required.source (or "
            "admin.progress_file); the next sync tries again."
        )
        return
    counts: Counter = Counter()
    with_masks = 0
    from ..masks import clashing_ids

    clashing = clashing_ids(known)
    stamp = legacy.stat().st_mtime
    for key, status in progress.annotated.items():
        image_id = found[key]
        if image_id is None:
            continue
        doc = store._raw(image_id)
        if doc["status"] != "todo" or status == "todo":
            counts["todo" if status == "todo" else "unchanged"] += 1
            continue
        fields: dict[str, Any] = {
            "status": status, "annotator": LEGACY_ANNOTATOR, "completed_at": stamp,
            "updated_at": stamp, "note": f"imported from DEXTR-AnnoTool's {legacy.name}",
            "legacy": True,
        }
        if status == "done" and not doc.get("objects"):
            # a file under a stem that photos share is not read here: reconcile gives it out
            objects = _objects_from_mask(store, _legacy_mask_file(store, image_id, clashing))
            if objects:
                fields.update({"objects": objects, "n_objects": len(objects), "legacy": None})
                with_masks += 1
        store._update(image_id, fields)
        counts[status] += 1
    if unknown:
        report.messages.append(
            f"{len(unknown)} entr(y/ies) of {legacy} name no image in the source folder "
            f"(ignored): {_first(unknown)}"
        )
    if progress.bad:
        report.messages.append(
            f"{len(progress.bad)} entr(y/ies) of {legacy} are not yes/no/skip (ignored): "
            f"{_first(progress.bad)}"
        )
    if with_masks:
        report.messages.append(
            f"{with_masks} image(s) imported as done had mask files in {store.destination}; "
            "their objects were read from them (the files are unchanged)"
        )
    if store.legacy_base is not None:
        report.messages.extend(path_differences(
            progress, store.legacy_base, store.source_dir, store.destination,
            (with_masks, counts["done"])))
    report.legacy_imported = dict(counts)
    report.legacy_file = legacy
    store.backend.update_meta({"legacy_import": {"file": str(legacy), "at": store.clock(),
                                                 "counts": dict(counts)}})
    store._log("legacy_import", None, None, file=str(legacy), **dict(counts))


def _legacy_mask_file(store: Store, image_id: str, clashing: frozenset[str]
                      ) -> Path | None:
    """The existing mask file of an image in the destination (in save_format), or None."""
    from ..masks import SAVE_FORMATS, mask_path

    if store.destination is None or store.mask_suffix is None:
        return None
    # The configured format only (exports and reconcile read that one); both when not given.
    formats = [store.save_format] if store.save_format in SAVE_FORMATS else list(SAVE_FORMATS)
    for fmt in formats:
        try:
            path = mask_path(store.destination, image_id, store.mask_suffix, fmt, clashing)
        except ValueError:
            return None
        if path.is_file():
            return path
    return None


def _objects_from_mask(store: Store, path: Path | None) -> list[dict]:
    """One object document per label 1..max of an image's mask file ``path`` ([] if none)."""
    if path is None:
        return []
    n = _count_labels(path)
    if not n:
        return []
    try:
        created = path.stat().st_mtime
    except OSError:
        created = store.clock()
    label = store.labels[0] if store.labels else "object"
    return [
        {"object_id": uuid.uuid4().hex, "index": i, "label": label, "points": "",
         "engine": LEGACY_ENGINE, "annotator": LEGACY_ANNOTATOR, "created_at": created,
         "seconds": 0.0}
        for i in range(1, n + 1)
    ]


# ---- start over / crash repair ------------------------------------------------------------------


def reset(store: Store) -> Path | str:
    """Start over: keep a backup of everything, empty the store; return the backup's name.

    The file store moves its files to ``<name>.backup-<UTC time>`` (a store by itself); the
    PostgreSQL store copies its tables into a schema ``dextr_backup_<UTC time>``
    (:meth:`Backend.reset`). The new store is empty (call :meth:`~Store.sync` to scan the source
    again); DEXTR-AnnoTool's progress file is not imported again, and :func:`reconcile` does not
    adopt mask files older than the reset. Raises a store error saying what is on disk if a step
    fails.
    """
    backend = store.backend
    with backend.transaction():
        backend.lock_for_maintenance()
        backup = backend.reset(store.clock())
        store._log("reset", None, None, backup=str(backup))
    return backup


def reconcile(store: Store, destination: str | os.PathLike, mask_suffix: str,
              save_format: str) -> list[str]:
    """Make records and mask files agree after a crash; return one line per fix.

    * done with objects, mask file missing -> todo (objects' points kept, note says why; objects
      imported from that DEXTR-AnnoTool mask file, which have no points, are dropped with it).
    * in_progress with objects, mask file newer than its last object -> done by its holder
      (the app saved the mask, then stopped before recording it).
    * todo without objects, mask file present (not older than a :meth:`reset`) -> done, with
      ``n_objects`` = the largest label in the file, annotator unknown (work from before this
      store, e.g. a store restarted after damage).
    * done imported from DEXTR-AnnoTool -> ``n_objects`` read from its mask file.
    Done images without objects need no mask file. Missing images are left alone.
    """
    from ..masks import clashing_ids, mask_path

    dest = Path(destination)
    lines: list[str] = []
    backend = store.backend
    with backend.transaction():
        backend.lock_for_maintenance()
        reset_at = backend.meta().get("reset_at")
        now = store.clock()
        docs = backend.all_images()
        clashing = clashing_ids(d["id"] for d in docs)
        if clashing:
            lines += _adopt_shared_files(store, docs, clashing, dest, mask_suffix, save_format)
            docs = backend.all_images()
        existing = _files_under(dest)
        stems = {os.path.splitext(p)[0] for p in existing}
        for doc in docs:
            if doc.get("missing"):
                continue
            status, n_objects = doc["status"], len(doc.get("objects") or [])
            if status not in ("done", "todo", "in_progress"):
                continue
            if status == "done":
                wanted = n_objects > 0 or doc.get("legacy")
            elif status == "in_progress":
                wanted = n_objects > 0
            else:  # todo: only when a file of that name exists (cheap string test first)
                base = doc["id"] if doc["id"] in clashing else os.path.splitext(doc["id"])[0]
                wanted = n_objects == 0 and os.path.join(str(dest), base + mask_suffix) in stems
            if not wanted:
                continue
            try:
                mpath = mask_path(dest, doc["id"], mask_suffix, save_format, clashing)
            except ValueError:
                continue
            mtime = existing.get(str(mpath))
            image_id = doc["id"]
            if status == "done" and mtime is None and n_objects > 0:
                # Objects read from a DEXTR-AnnoTool mask (no clicks) existed only in that file;
                # objects painted by hand (strokes, no clicks) are rebuilt from their strokes.
                kept = [o for o in doc["objects"] if o.get("points") or o.get("strokes")]
                kept = [dict(o, index=i) for i, o in enumerate(kept, start=1)]
                note = f"mask file {mpath} was missing; annotate again (clicks kept)"
                if len(kept) < n_objects:
                    note = (f"mask file {mpath} was missing; annotate again ({n_objects - len(kept)}"
                            " object(s) imported from that DEXTR-AnnoTool mask are gone with it)")
                store._update(image_id, {"status": "todo", "annotator": None,
                                         "completed_at": None, "claimed_at": None,
                                         "updated_at": now, "note": note, "objects": kept,
                                         "n_objects": len(kept)})
                lines.append(f"{image_id}: recorded done but {note}; set back to todo.")
            elif status == "done" and mtime is not None and doc.get("legacy"):
                n = _count_labels(mpath)
                if n is not None:
                    store._update(image_id, {"n_objects": n, "legacy": None})
                    lines.append(f"{image_id}: {n} object(s) counted in {mpath} "
                                 "(imported from DEXTR-AnnoTool).")
            elif status == "in_progress" and mtime is not None and n_objects > 0:
                last = max(o.get("created_at") or 0.0 for o in doc["objects"])
                if mtime >= last:
                    store._update(image_id, {"status": "done", "completed_at": mtime,
                                            "claimed_at": None, "updated_at": now,
                                            "n_objects": n_objects, "resume": None,
                                            "note": "completed by reconcile: mask saved",
                                            "session": None})
                    lines.append(f"{image_id}: mask {mpath} was saved but the image not "
                                 f"marked done; marked done by {doc['annotator']}.")
            elif (status == "todo" and n_objects == 0 and mtime is not None
                  and (reset_at is None or mtime >= reset_at)):
                n = _count_labels(mpath)
                if n is None:
                    lines.append(f"{image_id}: mask file {mpath} exists but cannot be read; "
                                 "left as todo (annotating will overwrite it).")
                    continue
                store._update(image_id, {"status": "done", "n_objects": n, "annotator": None,
                                        "completed_at": mtime, "updated_at": now,
                                        "note": f"mask file {mpath} found on disk"})
                lines.append(f"{image_id}: mask file {mpath} found for a todo image; marked "
                             f"done ({n} object(s)).")
        if lines:
            store._log("reconciled", None, None, fixes=len(lines))
    return lines


def _adopt_shared_files(store: Store, docs: list[dict], clashing: frozenset[str],
                        dest: Path, mask_suffix: str, save_format: str) -> list[str]:
    """Give each mask file saved under a name stem that photos share (``a_mask.png`` of ``a.jpg``
    and ``a.png``, written by DEXTR-AnnoTool or before names were kept unique) to the one photo it
    belongs to, under that photo's own name (``a.jpg_mask.png``); one line per file.

    The owner is the photo whose object ids the file names (:func:`masks.label_map_object_ids`),
    else the only photo of the group recorded done (or in progress with objects). A file whose
    owner cannot be told is left where it is, and said so. Inside reconcile's transaction.
    """
    from ..masks import label_map_object_ids, mask_path

    groups: dict[Path, list[dict]] = defaultdict(list)
    for doc in docs:
        if doc["id"] in clashing:
            with contextlib.suppress(ValueError):
                groups[mask_path(dest, doc["id"], mask_suffix, save_format)].append(doc)
    lines: list[str] = []
    for shared, members in sorted(groups.items()):
        if not shared.is_file():
            continue
        names = ", ".join(d["id"] for d in members)
        stamped = label_map_object_ids(shared)
        if stamped is not None:
            owners = [d for d in members
                      if [o.get("object_id", "") for o in d.get("objects") or []] == stamped]
        else:
            owners = [d for d in members if (d["status"] == "done" and (d.get("objects")
                                                                           or d.get("legacy")))
                      or (d["status"] == "in_progress" and d.get("objects"))]
        if len(owners) != 1:
            lines.append(f"{shared} is the mask file of one of {names} (they share a name "
                         "stem); which one cannot be told, so it is left as it is. Each of them "
                         "now saves its mask under its whole name: check them on the Progress "
                         "page and annotate again the ones without a mask.")
            continue
        owner = owners[0]["id"]
        target = mask_path(dest, owner, mask_suffix, save_format, clashing)
        if target.exists():
            lines.append(f"{shared} is left as it is: {owner} has its own mask file {target}.")
            continue
        try:
            os.replace(shared, target)
        except OSError as exc:
            lines.append(f"{owner}: could not rename its mask file {shared} to {target} ({exc}); "
                         "fix the folder's permissions, then rescan.")
            continue
        lines.append(f"{owner}: its mask file {shared.name} is now {target.name}: {names} share "
                     "the name stem, so each photo's mask keeps its whole name.")
        doc = owners[0]
        if doc["status"] == "done" and doc.get("legacy") and not doc.get("objects"):
            objects = _objects_from_mask(store, target)
            if objects:
                store._update(owner, {"objects": objects, "n_objects": len(objects),
                                      "legacy": None})
    return lines


def _files_under(folder: Path) -> dict[str, float]:
    """``{str(path): mtime}`` of every file under ``folder`` (hidden folders skipped)."""
    out: dict[str, float] = {}
    if not folder.is_dir():
        return out
    for here, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = os.path.join(here, name)
            try:
                out[path] = os.stat(path).st_mtime
            except OSError:
                continue
    return out


def _count_labels(path: Path) -> int | None:
    """The largest label in a saved label map (= its number of objects), None if unreadable."""
    from ..masks import load_label_map

    try:
        labels = load_label_map(path)
    except Exception:  # any unreadable mask is reported by the caller, never fatal
        return None
    return int(labels.max()) if labels.size else 0
