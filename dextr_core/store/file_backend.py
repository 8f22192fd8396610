"""The file backend of the progress store: TinyDB documents over a JSON snapshot and a journal.

:class:`FileBackend` implements :class:`~dextr_core.store.backend.Backend` for one store file
(``admin.progress_file``); :mod:`dextr_core.store.journal` is its storage engine (the files on
disk and their failure rules). Every transaction holds a thread lock and a file lock
(``<store>.lock``), so one Streamlit server's sessions (threads) and two server processes can
share one store; a transaction that returned is on disk (a ``kill -9`` afterwards loses
nothing), one that raised changed nothing.

TinyDB tables: ``images`` (one document per image, its objects embedded as a list), ``events``
(the append-only activity log) and ``meta`` (store creation, reset and legacy import facts). The
backend keeps in-memory indexes over them (todo heap, claims, missing ids, the summary's counts),
rebuilt when the files are read and kept up to date on every change, so that claiming the next
image and the summary cost no scan of a 100,000-image store.

:class:`ProgressStore` is the store's rules (:class:`~dextr_core.store.rules.Store`) over a
:class:`FileBackend`, built from the file's path.
"""

from __future__ import annotations

import heapq
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from filelock import FileLock
from tinydb.table import Document

from ..fileio import fsync_dir
from .backend import Figures
from .journal import JournaledStorage, Problem, open_journaled_db
from .records import (
    _EVENTS,
    _IMAGES,
    _META,
    _META_ID,
    _NUMBER_TYPES,
    _PLAIN_TODO_KEYS,
    STATUSES,
    Event,
    StoreCorruptError,
    StoreWriteError,
    _document_problem,
    _free_name,
    _is_default,
    _stamp,
)
from .rules import Store

__all__ = ["FileBackend", "ProgressStore"]


class FileBackend:
    """The documents of one store file ``path`` (``<path>.journal`` and ``<path>.lock`` next to
    it). ``clock`` stamps the store's creation. A store whose files cannot be read raises
    :class:`StoreCorruptError` naming them, and they are left untouched. With
    ``recover_corrupt=True`` both files are moved aside instead (``<name>.corrupt-<time>``,
    ``<name>.journal.corrupt-<time>``: :attr:`recovered_files`, the first also
    :attr:`recovered_from`) and a new, empty store is started. ``compact_bytes``: the journal
    size that makes the next write compact it into the snapshot.
    """

    def __init__(self, path: str | os.PathLike, *, clock: Callable[[], float] = time.time,
                 recover_corrupt: bool = False, compact_bytes: int | None = None):
        self.path = Path(path)
        self.recovered_from: Path | None = None
        self.recovered_files: list[Path] = []
        self._reset_indexes()
        kwargs: dict[str, Any] = {"listener": self._on_change, "on_reload": self._rebuild_indexes,
                                  "validate": _document_problem}
        if compact_bytes is not None:
            kwargs["compact_bytes"] = compact_bytes
        try:
            self._storage = JournaledStorage(self.path, **kwargs)
        except StoreCorruptError:
            if not recover_corrupt:
                raise
            self._storage = self._recover_corrupt(kwargs)
        self._db = open_journaled_db(self._storage)
        self._images = self._db.table(_IMAGES, cache_size=0)
        self._events = self._db.table(_EVENTS, cache_size=0)
        self._meta = self._db.table(_META, cache_size=0)
        with self._storage.transaction():
            if self._meta.get(doc_id=_META_ID) is None:
                self._meta.insert(Document({"created_at": clock()}, doc_id=_META_ID))

    def _recover_corrupt(self, kwargs) -> JournaledStorage:
        """Move the snapshot AND the journal aside (``*.corrupt-<UTC time>``, never over an
        existing file: every old byte is kept), then start a new, empty store."""
        stamp = _stamp(time.time())
        journal = self.path.with_name(self.path.name + ".journal")
        with FileLock(str(self.path.with_name(self.path.name + ".lock"))):
            for old in (self.path, journal):
                if old.exists():
                    kept = _free_name(old.with_name(f"{old.name}.corrupt-{stamp}"))
                    os.replace(old, kept)
                    self.recovered_files.append(kept)
            fsync_dir(self.path.parent)
        self.recovered_from = self.recovered_files[0] if self.recovered_files else None
        return JournaledStorage(self.path, **kwargs)

    def close(self) -> None:
        """Release the journal's file handle (the store cannot be used afterwards)."""
        self._storage.close()

    def transaction(self) -> AbstractContextManager[None]:
        """Thread lock and file lock held; the changes are journaled when the outermost ends."""
        return self._storage.transaction()

    def count(self) -> int:
        return len(self._doc_of)

    # ---- one image ----------------------------------------------------------------------------

    def image(self, image_id: str) -> dict | None:
        doc_id = self._doc_of.get(image_id)
        if doc_id is None:
            return None
        return self._storage.read()[_IMAGES].get(str(doc_id))

    peek = image

    def update(self, image_id: str, fields: dict) -> None:
        def apply(doc: dict) -> None:
            for key, value in fields.items():
                if _is_default(value):
                    doc.pop(key, None)
                else:
                    doc[key] = value

        self._images.update(apply, doc_ids=[self._doc_of[image_id]])

    def insert_images(self, docs: list[dict]) -> None:
        next_id = self._max_image_doc + 1
        self._images.insert_multiple(
            Document(doc, doc_id=next_id + i) for i, doc in enumerate(docs))

    def log(self, time: float, action: str, image_id: str | None, annotator: str | None,
            detail: dict) -> None:
        doc = {"time": time, "action": action, "image_id": image_id, "annotator": annotator,
               "detail": detail}
        doc = {k: v for k, v in doc.items() if not _is_default(v)}
        self._events.insert(Document(doc, doc_id=self._max_event_id + 1))

    # ---- claims -------------------------------------------------------------------------------

    def claims(self, annotator: str | None = None) -> list[dict]:
        held = (self.image(i) for i in sorted(self._in_progress))
        return [d for d in held if annotator is None or d.get("annotator") == annotator]

    def free_images(self, lapsed_before: float) -> tuple[list[dict], dict | None]:
        lapsed = [d for d in self.claims()
                  if d.get("claimed_at") is None or d["claimed_at"] <= lapsed_before]
        images = self._storage.read().get(_IMAGES, {})
        heap = self._todo_heap
        while heap:  # a lazy heap: entries no longer todo are dropped when they reach the top
            doc = images.get(str(self._doc_of.get(heap[0], -1)))
            if doc is not None and doc["status"] == "todo" and not doc.get("missing"):
                return lapsed, doc
            heapq.heappop(heap)
        return lapsed, None

    # ---- reading ------------------------------------------------------------------------------

    def images(self, status: str | None = None, with_objects: bool = False) -> list[dict]:
        table = self._storage.read().get(_IMAGES, {})
        doc_of = self._doc_of
        docs = (table[str(doc_of[i])] for i in self._ids())
        return [d for d in docs if (status is None or d["status"] == status)
                and (not with_objects or d.get("objects"))]

    def review_facts(self) -> list[dict]:
        return [d for d in self._storage.read().get(_IMAGES, {}).values()
                if d["status"] == "done" or d.get("review")]

    def image_ids(self, status: str | None = None) -> list[str]:
        ids = self._ids()
        if status is None:
            return list(ids)
        table = self._storage.read().get(_IMAGES, {})
        doc_of = self._doc_of
        return [i for i in ids if table[str(doc_of[i])]["status"] == status]

    def _ids(self) -> list[str]:
        if self._sorted_ids is None:
            self._sorted_ids = sorted(self._doc_of)
        return self._sorted_ids

    def events(self, since: float | None = None, limit: int | None = None) -> list[Event]:
        ids = self._event_ids
        start = 0
        if since is not None:
            # Events are appended under the store lock, so their times only go forward.
            lo, hi = 0, len(ids)
            times = self._event_times
            while lo < hi:
                mid = (lo + hi) // 2
                if times[mid] <= since:
                    lo = mid + 1
                else:
                    hi = mid
            start = lo
        if limit is not None:
            start = max(start, len(ids) - int(limit))
        table = self._storage.read().get(_EVENTS, {})
        out = []
        for doc_id in ids[start:]:
            d = table[str(doc_id)]
            out.append(Event(d["time"], d["action"], d.get("image_id"), d.get("annotator"),
                             dict(d.get("detail") or {})))
        return out

    def figures(self) -> Figures:
        return Figures(
            by_status={s: int(self._counts.get(s, 0)) for s in STATUSES},
            missing=len(self._missing), objects=int(self._total_objects),
            seconds=float(self._total_seconds), done=dict(self._ann_done),
            skipped=dict(self._ann_skipped), objects_by=dict(self._ann_objects),
            seconds_by=dict(self._ann_seconds),
            seconds_per_object={k: list(v.values()) for k, v in self._ann_spo.items()},
            last_activity=dict(self._ann_last), claims=self.claims(),
            last_event=self._event_times[-1] if self._event_times else None)

    # ---- maintenance --------------------------------------------------------------------------

    def lock_for_maintenance(self) -> None:
        """Nothing to do: the transaction holds the file lock already."""

    def all_ids(self) -> dict[str, int]:
        return self._doc_of

    def missing_ids(self) -> set[str]:
        return self._missing

    def all_images(self) -> list[dict]:
        return sorted(self._storage.read().get(_IMAGES, {}).values(), key=lambda d: d["id"])

    def meta(self) -> dict:
        return dict(self._meta.get(doc_id=_META_ID) or {})

    def update_meta(self, fields: dict) -> None:
        self._meta.update(fields, doc_ids=[_META_ID])


    def reset(self, now: float) -> Path:
        """Move the store to ``<name>.backup-<UTC time>`` next to it, start an empty one; return
        the backup's path (inside a transaction).

        The store is compacted first, so that backup holds everything and opens as a store by
        itself (``ProgressStore(backup, ...)``); the journal, by then only its header, is kept
        too, as ``<name>.journal.backup-<UTC time>``. Other processes sharing the store notice on
        their next call. Raises :class:`StoreWriteError` saying what is on disk if a step fails.
        """
        backup = _free_name(self.path.with_name(f"{self.path.name}.backup-{_stamp(now)}"))
        journal = self._storage.journal_path
        backup_journal = _free_name(journal.with_name(f"{journal.name}.backup-{_stamp(now)}"))
        step, moved = "write a snapshot of the store", False
        try:
            self._storage.compact()
            # The journal first, then the snapshot: a crash between the two leaves the old
            # snapshot alone, which opens as the old store (it holds the whole journal).
            step = f"move the journal to {backup_journal}"
            os.replace(journal, backup_journal)
            step = f"move the store to {backup}"
            os.replace(self.path, backup)
            step, moved = "write the new, empty store", True
            self._storage.start_new_store({
                _META: {str(_META_ID): {"created_at": now, "reset_at": now,
                                        "reset_backup": str(backup)}},
            })
        except OSError as exc:
            self._storage.reload_on_next_use()
            state = (f"The old store is kept as {backup} (journal {backup_journal})."
                     if moved else "Nothing was reset; the store is as it was.")
            raise StoreWriteError(
                f"Could not reset the progress store {self.path}: could not {step} ({exc}). "
                f"{state} Check the disk space and the folder's permissions, then try again."
            ) from exc
        return backup

    # ---- in-memory indexes (rebuilt on load, kept up to date on every change) ---------------

    def _reset_indexes(self) -> None:
        self._doc_of: dict[str, int] = {}
        self._sorted_ids: list[str] | None = None
        self._max_image_doc = 0
        self._todo_heap: list[str] = []
        self._in_progress: set[str] = set()
        self._missing: set[str] = set()
        self._counts: Counter = Counter()
        self._total_objects = 0
        self._total_seconds = 0.0
        self._ann_done: Counter = Counter()
        self._ann_skipped: Counter = Counter()
        self._ann_objects: Counter = Counter()
        self._ann_seconds: Counter = Counter()
        self._ann_spo: dict[str, dict[str, float]] = defaultdict(dict)
        self._ann_last: dict[str, float] = {}
        self._event_times: list[float] = []
        self._event_ids: list[int] = []
        self._max_event_id = 0
        self._heap_bulk = False
        self._indexed_tables: dict = {}

    def _rebuild_indexes(self, tables: dict) -> Problem | None:
        """Build every index from ``tables`` (``{table: {doc_id: document}}``), checking each document.

        The journal calls it with a snapshot's tables as soon as they are read, so the record checks
        and the index building are one pass over the 200,000 documents of a large store. Returns
        None, or ``(table, doc_id, reason)`` for the first document
        :func:`records._document_problem` refuses (the indexes are then incomplete: the journal
        refuses the whole store). The changes read from the journal after it go to
        :meth:`_on_change`.
        """
        self._reset_indexes()
        self._indexed_tables = tables
        self._heap_bulk = True  # the todo heap is filled by appends and heapified once at the end
        doc_of, todo, index_image = self._doc_of, self._todo_heap, self._index_image
        n_plain = 0
        for key, doc in tables.get(_IMAGES, {}).items():
            image_id = doc.get("id")
            if (doc.get("status") == "todo" and doc.keys() <= _PLAIN_TODO_KEYS
                    and type(image_id) is str and image_id and key.isdigit()):
                # An image never worked on (most of a large store): the checks of
                # _document_problem and what _index_image does with it, inline.
                doc_of[image_id] = int(key)
                todo.append(image_id)
                n_plain += 1
                continue
            reason = _document_problem(_IMAGES, key, doc)
            if reason is not None:
                return _IMAGES, key, reason
            doc_of[image_id] = int(key)
            index_image(key, doc, +1)
        if n_plain:
            self._counts["todo"] += n_plain
        self._max_image_doc = max(doc_of.values(), default=0)
        heapq.heapify(self._todo_heap)
        self._heap_bulk = False
        ids, times, last = self._event_ids, self._event_times, self._ann_last
        for key, doc in tables.get(_EVENTS, {}).items():
            t = doc.get("time")
            if type(t) not in _NUMBER_TYPES or type(doc.get("action")) is not str or not key.isdigit():
                reason = _document_problem(_EVENTS, key, doc)  # the same checks, with the reason
                if reason is not None:
                    return _EVENTS, key, reason
            ids.append(int(key))
            times.append(t)
            who = doc.get("annotator")
            if who and t > last.get(who, 0.0):
                last[who] = t
        if any(a > b for a, b in zip(ids, ids[1:], strict=False)):  # not stored in id order
            pairs = sorted(zip(ids, times, strict=True))
            self._event_ids, self._event_times = [i for i, _ in pairs], [t for _, t in pairs]
        self._max_event_id = self._event_ids[-1] if self._event_ids else 0
        return None

    def _on_change(self, table: str, key: str, old: dict | None, new: dict | None) -> None:
        if table == _IMAGES:
            if old is not None:
                self._index_image(key, old, -1)
                if new is None or new["id"] != old["id"]:
                    self._doc_of.pop(old["id"], None)
                    self._sorted_ids = None
            if new is not None:
                if new["id"] not in self._doc_of:
                    self._doc_of[new["id"]] = int(key)
                    self._max_image_doc = max(self._max_image_doc, int(key))
                    self._sorted_ids = None
                self._index_image(key, new, +1)
        elif table == _EVENTS:
            if new is not None and old is None and int(key) > self._max_event_id:
                self._index_event(key, new)
            else:  # an event rewritten or removed: not done by this module, rebuild to be safe
                self._rebuild_indexes(self._indexed_tables)  # every document in it was checked

    def _index_event(self, key: str, doc: dict) -> None:
        self._event_ids.append(int(key))
        self._event_times.append(doc["time"])
        self._max_event_id = max(self._max_event_id, int(key))
        who = doc.get("annotator")
        if who:
            self._ann_last[who] = max(self._ann_last.get(who, 0.0), doc["time"])

    def _index_image(self, key: str, doc: dict, sign: int) -> None:
        image_id = doc["id"]
        if doc.get("missing"):
            (self._missing.add if sign > 0 else self._missing.discard)(image_id)
            return
        status = doc["status"]
        self._counts[status] += sign
        if status == "todo" and sign > 0:
            # Lazy heap: stale entries are dropped when they reach the top.
            if self._heap_bulk:
                self._todo_heap.append(image_id)
            else:
                heapq.heappush(self._todo_heap, image_id)
        elif status == "in_progress":
            (self._in_progress.add if sign > 0 else self._in_progress.discard)(image_id)
        objects = doc.get("objects") or ()
        self._total_objects += sign * len(objects)
        for obj in objects:
            self._ann_objects[obj.get("annotator") or ""] += sign
        seconds = doc.get("seconds") or 0.0
        self._total_seconds += sign * seconds
        who = doc.get("annotator") or ""
        if status == "done":
            self._ann_done[who] += sign
            self._ann_seconds[who] += sign * seconds
            n = doc.get("n_objects") or 0
            if sign > 0 and n > 0:
                self._ann_spo[who][image_id] = seconds / n
            else:
                self._ann_spo[who].pop(image_id, None)
        elif status == "skipped":
            self._ann_skipped[who] += sign



class ProgressStore(Store):
    """The progress store in a file: :class:`~dextr_core.store.rules.Store` over a
    :class:`FileBackend` at ``path`` (the snapshot file, ``admin.progress_file``).

    ``clock``, ``recover_corrupt`` and ``compact_bytes`` go to the backend as well; every other
    keyword is :class:`~dextr_core.store.rules.Store`'s. :attr:`recovered_from` and
    :attr:`recovered_files` name the damaged files moved aside (``recover_corrupt=True``).
    """

    def __init__(self, path: str | os.PathLike, source_dir: str | os.PathLike, *,
                 clock: Callable[[], float] = time.time, recover_corrupt: bool = False,
                 compact_bytes: int | None = None, **kwargs: Any):
        backend = FileBackend(path, clock=clock, recover_corrupt=recover_corrupt,
                              compact_bytes=compact_bytes)
        super().__init__(backend, source_dir, clock=clock, **kwargs)
        self.recovered_from = backend.recovered_from
        self.recovered_files = backend.recovered_files
