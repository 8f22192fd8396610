"""The progress store: which image is todo, claimed, done or skipped, who did what, and when.

One store is shared by a team: one Streamlit server serves many browser sessions as threads, and
two server processes may share one data folder. Every public method is one transaction under a
thread lock and a file lock (``<store>.lock``); see :mod:`dextr_core.store.journal` for the files
on disk (a JSON snapshot plus an fsync'd journal, TinyDB as the document API over them). A method
that returned has its change on disk (a ``kill -9`` afterwards loses nothing); a method that
raised changed nothing.

Claims
------
A claim is held by ``(annotator, session)``: ``session`` is a browser-session token (uuid hex) the
caller makes, passed as the keyword ``session=`` to every mutating call. ``session=None`` (scripts,
old callers) makes the annotator name the holder, as before. One image is held by one session at a
time: the same name in another tab gets another image from :meth:`ProgressStore.claim_next` and a
:class:`ClaimError` ("open in another tab or browser of yours") from :meth:`ProgressStore.claim`.
A claim lapses ``claim_timeout_s`` after the holder's last activity (claim, heartbeat, object added
or removed); a lapsed image goes to the next annotator who asks, and is re-taken silently by its
holder if nobody took it. A call from a session whose claim moved to someone else is refused.
Object adds are idempotent by ``ObjectRecord.object_id`` and removes by id are too, so a retry never
duplicates; :meth:`ProgressStore.complete` calls the caller's ``write(objects)`` (the mask file)
under the checked claim and marks the image done only if it returns.

Conventions are in :mod:`dextr_core.store.records`; the folder scan, the DEXTR-AnnoTool import,
reset and reconcile in :mod:`dextr_core.store.maintenance`. TinyDB tables: ``images`` (one
document per image, its objects embedded as a list), ``events`` (the append-only activity log) and
``meta`` (store creation, reset and legacy import facts).
"""

from __future__ import annotations

import heapq
import math
import os
import re
import statistics
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock
from tinydb.table import Document

from ..fileio import fsync_dir
from . import maintenance
from .journal import JournaledStorage, Problem, StoreCorruptError, open_journaled_db
from .records import (
    _EVENTS,
    _IMAGES,
    _META,
    _META_ID,
    _NUMBER_TYPES,
    _OBJECT_ID_RE,
    _PLAIN_TODO_KEYS,
    STATUSES,
    ClaimError,
    Event,
    ImageRecord,
    ObjectRecord,
    StoreInputError,
    SyncReport,
    _document_problem,
    _encode_points,
    _free_name,
    _is_default,
    _iso,
    _object_record,
    _record,
    _stamp,
    _with_object_ids,
    review_state,
)

__all__ = ["ProgressStore", "open_store"]


class ProgressStore:
    """Progress of every image of one source folder, safe for many threads and two processes.

    ``path`` is the store's snapshot file (``admin.progress_file``; ``<path>.journal`` and
    ``<path>.lock`` live next to it). ``source_dir`` is scanned by :meth:`sync`; folders listed in
    ``exclude_dirs`` (e.g. a destination inside the source) and hidden files/folders are ignored.
    ``clock`` returns epoch seconds (tests inject one).

    ``destination`` (the mask folder), ``mask_suffix`` and ``save_format`` (``png``/``npy``) tell
    the scan which files are masks when the source is the destination, and the DEXTR-AnnoTool
    import where its masks are; ``labels`` (the configured labels) names imported objects;
    ``legacy_file`` is DEXTR-AnnoTool's progress file (None: ``<source>/.anno_prog`` if it
    exists), ``legacy_base`` the folder its relative ``required:`` paths are resolved against
    (the config's folder; None: they are not compared). See :mod:`dextr_core.store.maintenance`.

    A store whose files cannot be read raises :class:`StoreCorruptError` naming them, and they
    are left untouched. With ``recover_corrupt=True`` both files are moved aside instead
    (``<name>.corrupt-<time>``, ``<name>.journal.corrupt-<time>``: :attr:`recovered_files`, the
    first also :attr:`recovered_from`) and a new, empty store is started.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        source_dir: str | os.PathLike,
        *,
        claim_timeout_s: float = 1800.0,
        clock: Callable[[], float] = time.time,
        exclude_dirs: Iterable[str | os.PathLike] = (),
        recover_corrupt: bool = False,
        compact_bytes: int | None = None,
        legacy_file: str | os.PathLike | None = None,
        legacy_base: str | os.PathLike | None = None,
        mask_suffix: str | None = None,
        save_format: str | None = None,
        destination: str | os.PathLike | None = None,
        labels: Sequence[str] = (),
    ):
        self.path = Path(path)
        self.source_dir = Path(source_dir)
        self.legacy_file = None if legacy_file is None else Path(legacy_file)
        self.legacy_base = None if legacy_base is None else Path(legacy_base)
        self.mask_suffix = mask_suffix
        self.save_format = save_format
        self.destination = None if destination is None else Path(destination)
        self.labels = tuple(str(label) for label in labels)
        self.claim_timeout_s = float(claim_timeout_s)
        self.clock = clock
        self.exclude_dirs = tuple(Path(d).resolve() for d in exclude_dirs)
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
                self._meta.insert(Document({"created_at": self.clock()}, doc_id=_META_ID))

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

    def __len__(self) -> int:
        """Number of images known to the store (missing ones included)."""
        with self._storage.transaction():
            return len(self._doc_of)

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

    # ---- helpers ------------------------------------------------------------------------------

    def _raw(self, image_id: str) -> dict | None:
        doc_id = self._doc_of.get(image_id)
        if doc_id is None:
            return None
        return self._storage.read()[_IMAGES].get(str(doc_id))

    def _require(self, image_id: str) -> dict:
        doc = self._raw(image_id)
        if doc is None:
            raise StoreInputError(
                f"No image {image_id!r} in the progress store {self.path}. Ids are paths relative "
                f"to the source folder {self.source_dir}; run a sync if the file is new."
            )
        return doc

    def _update(self, image_id: str, fields: dict) -> None:
        def apply(doc: dict) -> None:
            for key, value in fields.items():
                if _is_default(value):
                    doc.pop(key, None)
                else:
                    doc[key] = value

        self._images.update(apply, doc_ids=[self._doc_of[image_id]])

    def _log(self, action: str, image_id: str | None, annotator: str | None, **detail) -> None:
        doc = {"time": self.clock(), "action": action, "image_id": image_id,
               "annotator": annotator, "detail": detail}
        doc = {k: v for k, v in doc.items() if not _is_default(v)}
        self._events.insert(Document(doc, doc_id=self._max_event_id + 1))

    def _lapsed(self, doc: dict, now: float) -> bool:
        claimed = doc.get("claimed_at")
        return claimed is None or now - claimed > self.claim_timeout_s

    @staticmethod
    def _check_name(annotator: str, what: str = "annotator") -> str:
        if not isinstance(annotator, str) or not annotator.strip():
            raise StoreInputError(f"The {what} name is empty; enter your name before annotating.")
        _check_text(annotator, f"The {what} name")
        return annotator.strip()

    def _held_by_other_error(self, doc: dict, now: float, annotator: str | None = None) -> ClaimError:
        minutes = max(0, int((now - (doc.get("claimed_at") or now)) // 60))
        if annotator is not None and doc.get("annotator") == annotator:
            return ClaimError(
                f"{doc['id']} is open in another tab or browser of yours ({annotator}) since "
                f"{_iso(doc.get('claimed_at'))} ({minutes} min ago). Continue it there, or close "
                f"that tab; it comes back here after {self.claim_timeout_s / 60:g} min idle."
            )
        return ClaimError(
            f"{doc['id']} is being annotated by {doc['annotator']} since "
            f"{_iso(doc.get('claimed_at'))} ({minutes} min ago). Pick another image; it comes "
            f"back if they leave it idle for {self.claim_timeout_s / 60:g} min."
        )

    @staticmethod
    def _check_session(session: str | None) -> str | None:
        if session is None:
            return None
        if not isinstance(session, str) or not session.strip() or len(session) > 128:
            raise StoreInputError(
                f"The session token {session!r} is not a non-empty string of at most 128 "
                "characters; pass the browser session's uuid hex (or None)."
            )
        return session

    @staticmethod
    def _same_session(doc: dict, session: str | None) -> bool:
        """Whether a caller with ``session`` counts as the session holding ``doc``.

        ``None`` on either side matches (scripts and claims made before sessions existed: the
        holder is the annotator name, as before).
        """
        held = doc.get("session")
        return session is None or held is None or held == session

    def _holds(self, doc: dict, annotator: str, session: str | None) -> bool:
        return (doc["status"] == "in_progress" and doc.get("annotator") == annotator
                and self._same_session(doc, session))

    def _require_holder(self, doc: dict, annotator: str, action: str,
                        session: str | None = None) -> None:
        if self._holds(doc, annotator, session):
            return
        if doc["status"] == "in_progress":
            now = self.clock()
            minutes = max(0, int((now - (doc.get("claimed_at") or now)) // 60))
            if doc.get("annotator") == annotator:
                raise ClaimError(
                    f"{doc['id']} is open in another tab or browser of yours ({annotator}) since "
                    f"{_iso(doc.get('claimed_at'))} ({minutes} min ago); this tab no longer holds "
                    f"it. Continue there, or claim this image again here to {action}."
                )
            raise ClaimError(
                f"You ({annotator}) do not hold {doc['id']} (any more): {doc.get('annotator')} "
                f"has claimed it since {_iso(doc.get('claimed_at'))} ({minutes} min ago). Claim "
                f"another image, or claim this one again when it is free, to {action}."
            )
        by = ""
        if doc["status"] in ("done", "skipped") and doc.get("annotator"):
            when = doc.get("completed_at") or doc.get("updated_at")
            by = f" by {doc['annotator']} ({_iso(when)})"
        raise ClaimError(
            f"{doc['id']} is {doc['status']}{by}, not claimed by {annotator}; nothing was "
            f"changed. Claim it first to {action}."
        )

    def _take(self, doc: dict, annotator: str, now: float, session: str | None = None) -> None:
        """Give ``doc`` (todo, lapsed or finished) to ``annotator`` in ``session``."""
        fields: dict[str, Any] = {"status": "in_progress", "annotator": annotator,
                                  "claimed_at": now, "updated_at": now, "session": session}
        detail: dict[str, Any] = {}
        if doc["status"] in ("done", "skipped"):
            # what a correction left without Image done goes back to: the objects too, so that
            # they keep matching the mask file that Image done wrote from them
            fields["resume"] = {"status": doc["status"], "annotator": doc.get("annotator"),
                                "completed_at": doc.get("completed_at"),
                                "objects": list(doc.get("objects") or []),
                                "n_objects": doc.get("n_objects") or 0}
            detail["was"] = doc["status"]
        elif doc["status"] == "in_progress" and doc.get("annotator") != annotator:
            detail["from"] = doc.get("annotator")
        elif doc["status"] == "in_progress" and not self._same_session(doc, session):
            detail["from_session"] = doc.get("session")
        self._update(doc["id"], fields)
        self._log("claimed", doc["id"], annotator, **detail)

    def _unclaimed_fields(self, doc: dict, now: float) -> dict:
        resume = doc.get("resume")
        if resume:
            fields = {"status": resume["status"], "annotator": resume.get("annotator"),
                      "completed_at": resume.get("completed_at"), "claimed_at": None,
                      "updated_at": now, "resume": None, "session": None}
            if "objects" in resume:  # claims made before the objects were kept keep theirs
                fields.update(objects=resume["objects"], n_objects=resume.get("n_objects") or 0)
            return fields
        return {"status": "todo", "annotator": None, "claimed_at": None, "updated_at": now,
                "session": None}

    def _unclaim(self, doc: dict, now: float, annotator: str | None, **detail) -> None:
        """Give ``doc`` back unfinished (released, or its claim lapsed) and log it; a correction
        gets its objects back (``restored`` in the event: object counts must be read again)."""
        fields = self._unclaimed_fields(doc, now)
        if "objects" in fields:
            detail["restored"] = True
        self._update(doc["id"], fields)
        self._log("released", doc["id"], annotator, **detail)

    def _refresh(self, doc: dict, now: float, session: str | None) -> None:
        """The holder came back: renew the claim's time (and note its session if it had none)."""
        fields: dict[str, Any] = {"claimed_at": now}
        if session is not None and doc.get("session") != session:
            fields["session"] = session
        self._update(doc["id"], fields)

    # ---- claiming -----------------------------------------------------------------------------

    def claim_next(self, annotator: str, *, session: str | None = None) -> ImageRecord | None:
        """The next image for ``annotator`` in browser ``session``, now claimed; None when none left.

        Their own in-progress image first (smallest id if several): one held by this same session
        (or by no session), or one of theirs whose claim lapsed. An image that the same name holds
        in ANOTHER live session (a second tab) is never handed out again: the caller gets another
        image. Else the smallest id among the todo images and the images whose claim lapsed. A
        lapsed claim on an image that was done or skipped before (re-opened via :meth:`claim`)
        returns it to that status instead.
        """
        annotator = self._check_name(annotator)
        session = self._check_session(session)
        with self._storage.transaction():
            now = self.clock()
            images = self._storage.read().get(_IMAGES, {})
            held = [self._raw(i) for i in self._in_progress]
            own = sorted(
                d["id"] for d in held
                if d.get("annotator") == annotator
                and (self._same_session(d, session) or self._lapsed(d, now))
            )
            if own:
                doc = self._raw(own[0])
                if self._same_session(doc, session):
                    self._refresh(doc, now, session)
                else:  # our own lapsed claim from another tab: this tab takes it over
                    self._take(doc, annotator, now, session)
                return _record(self._raw(own[0]))
            lapsed = sorted(d["id"] for d in held if self._lapsed(d, now))
            candidates = []
            for image_id in lapsed:
                doc = self._raw(image_id)
                if doc.get("resume"):
                    self._unclaim(doc, now, doc.get("annotator"), lapsed=True)
                else:
                    candidates.append(image_id)
            heap = self._todo_heap
            while heap:
                doc = images.get(str(self._doc_of.get(heap[0], -1)))
                if doc is not None and doc["status"] == "todo" and not doc.get("missing"):
                    candidates.append(heap[0])
                    break
                heapq.heappop(heap)
            if not candidates:
                return None
            chosen = min(candidates)
            self._take(self._raw(chosen), annotator, now, session)
            return _record(self._raw(chosen))

    def claim(self, image_id: str, annotator: str, *, session: str | None = None) -> ImageRecord:
        """Claim one given image (prev/next navigation) for ``annotator`` in ``session``; return it.

        Raises :class:`ClaimError` naming the holder and since when if another live session holds
        it, including the same name in another tab ("open in another tab or browser of yours").
        A done or skipped image can be claimed to correct it; it returns to its previous status
        (and completer) if released or left to lapse without completing.
        """
        annotator = self._check_name(annotator)
        session = self._check_session(session)
        with self._storage.transaction():
            doc = self._require(image_id)
            now = self.clock()
            if doc.get("missing"):
                raise StoreInputError(
                    f"{image_id} is no longer in the source folder {self.source_dir}; put the file "
                    "back (then sync) to annotate it."
                )
            status = doc["status"]
            if status == "unreadable":
                raise StoreInputError(
                    f"{image_id} cannot be read ({doc.get('error')}). Replace the file; a lead can "
                    "then reopen it."
                )
            if status == "in_progress":
                if self._holds(doc, annotator, session):
                    self._refresh(doc, now, session)
                    return _record(self._raw(image_id))
                if not self._lapsed(doc, now):
                    raise self._held_by_other_error(doc, now, annotator)
            self._take(doc, annotator, now, session)
            return _record(self._raw(image_id))

    def heartbeat(self, image_id: str, annotator: str, *, session: str | None = None) -> None:
        """Keep ``annotator``'s claim (in ``session``) on ``image_id`` alive; ClaimError if lost."""
        annotator = self._check_name(annotator)
        session = self._check_session(session)
        with self._storage.transaction():
            doc = self._require(image_id)
            self._require_holder(doc, annotator, "keep working on it", session)
            self._update(image_id, {"claimed_at": self.clock()})

    def release(self, image_id: str, annotator: str, *, session: str | None = None) -> None:
        """Give the image back unfinished (objects kept); no-op if ``annotator`` does not hold it.

        A todo image goes back to todo; a done/skipped image claimed for correction goes back to
        its previous status. ClaimError if another live session holds it (someone else, or the
        same name in another tab).
        """
        annotator = self._check_name(annotator)
        session = self._check_session(session)
        with self._storage.transaction():
            doc = self._require(image_id)
            if doc["status"] != "in_progress":
                return
            if not self._holds(doc, annotator, session):
                if not self._lapsed(doc, self.clock()):
                    raise self._held_by_other_error(doc, self.clock(), annotator)
                return
            self._unclaim(doc, self.clock(), annotator)

    # ---- objects ------------------------------------------------------------------------------

    def _check_points(self, doc: dict, points) -> list[list[float]]:
        try:
            pts = [[float(p[0]), float(p[1])] for p in points]
            if any(len(p) != 2 for p in points):
                raise ValueError
        except (TypeError, ValueError, IndexError):
            raise StoreInputError(
                f"Object points for {doc['id']} must be a list of [x, y] pairs, got {points!r}."
            ) from None
        if len(pts) < 4:
            raise StoreInputError(
                f"An object needs at least 4 points (the extreme points), got {len(pts)}."
            )
        w, h = doc.get("width"), doc.get("height")
        for x, y in pts:
            if not (math.isfinite(x) and math.isfinite(y)):
                raise StoreInputError(f"Point ({x}, {y}) is not a finite number.")
            if w is not None and h is not None and not (0 <= x <= w and 0 <= y <= h):
                raise StoreInputError(
                    f"Point ({x:g}, {y:g}) is outside {doc['id']} ({w} x {h} px); click inside "
                    "the image."
                )
        return pts

    @staticmethod
    def _check_object_id(object_id) -> str:
        if object_id is None or object_id == "":
            return ""
        if not isinstance(object_id, str) or not _OBJECT_ID_RE.fullmatch(object_id):
            raise StoreInputError(
                f"Object id {object_id!r} is not 1-64 letters, digits, '-' or '_'; pass a uuid "
                "hex (uuid.uuid4().hex) or leave it empty for the store to make one."
            )
        return object_id

    def add_object(self, image_id: str, annotator: str, obj: ObjectRecord, *,
                   session: str | None = None) -> ObjectRecord:
        """Append an accepted object to an image ``annotator`` holds; return the stored record.

        ``obj.index`` (= count + 1) and ``obj.image_id`` are set by the store; ``obj.object_id``
        is kept (the store makes a uuid hex when it is empty); ``obj.annotator`` defaults to
        ``annotator``, ``obj.created_at`` to now. Points are ``[[x, y], ...]`` in full-image
        pixels, at least 4, inside the image. Idempotent: if ``obj.object_id`` is already stored
        on this image, the stored record is returned and nothing changes (a retry never
        duplicates). Raises ClaimError if ``annotator`` (in ``session``) does not hold the image,
        StoreInputError for bad points or a bad object id.
        """
        annotator = self._check_name(annotator)
        session = self._check_session(session)
        object_id = self._check_object_id(obj.object_id)
        with self._storage.transaction():
            doc = self._require(image_id)
            self._require_holder(doc, annotator, "add objects", session)
            objects = list(doc.get("objects") or [])
            if object_id:
                for stored in objects:
                    if stored.get("object_id") == object_id:
                        return _object_record(doc["id"], stored)
            points = self._check_points(doc, obj.points)
            now = self.clock()
            objects = _with_object_ids(objects)
            new = {
                "index": len(objects) + 1, "label": _check_text(str(obj.label), "The label"),
                "points": _encode_points(points),
                "engine": str(obj.engine or ""), "annotator": obj.annotator or annotator,
                "created_at": float(obj.created_at) if obj.created_at is not None else now,
                "seconds": float(obj.seconds or 0.0),
                "object_id": object_id or uuid.uuid4().hex,
            }
            objects.append(new)
            self._update(image_id, {"objects": objects, "claimed_at": now, "updated_at": now})
            self._log("object_added", image_id, annotator, index=new["index"], label=new["label"])
            return _object_record(doc["id"], new)

    def remove_object(self, image_id: str, annotator: str, index_or_object_id: int | str, *,
                      session: str | None = None) -> None:
        """Remove one object of an image ``annotator`` holds; later ones move up.

        ``index_or_object_id`` is the 1-based index (StoreInputError if there is none) or the
        object id; removing an object id that is already gone changes nothing (a retry).
        """
        annotator = self._check_name(annotator)
        session = self._check_session(session)
        key = index_or_object_id
        if isinstance(key, str):
            key = self._check_object_id(key)
            if not key:
                raise StoreInputError("remove_object needs an object index (1, 2, ...) or id.")
        elif isinstance(key, bool) or not isinstance(key, int):
            raise StoreInputError(
                f"remove_object needs an object index (1, 2, ...) or object id, got {key!r}."
            )
        with self._storage.transaction():
            doc = self._require(image_id)
            self._require_holder(doc, annotator, "remove objects", session)
            objects = list(doc.get("objects") or [])
            if isinstance(key, str):
                found = [o["index"] for o in objects if o.get("object_id") == key]
                if not found:
                    return
                index = found[0]
            else:
                index = key
                if not 1 <= index <= len(objects):
                    raise StoreInputError(
                        f"{image_id} has {len(objects)} object(s); there is no object {index!r}."
                    )
            removed = objects.pop(index - 1)
            objects = [dict(o, index=i) for i, o in enumerate(_with_object_ids(objects), start=1)]
            now = self.clock()
            self._update(image_id, {"objects": objects, "claimed_at": now, "updated_at": now})
            self._log("object_removed", image_id, annotator, index=index,
                      label=removed.get("label"))

    def objects(self, image_id: str | None = None) -> list[ObjectRecord]:
        """The objects of one image in index order, or of every image (by image id, then index).

        Objects stored before object ids existed have ``object_id == ""`` until the image's
        object list is next changed (then the store gives each one an id).
        """
        with self._storage.transaction():
            if image_id is not None:
                docs = [self._require(image_id)]
            else:
                table = self._storage.read().get(_IMAGES, {})
                docs = [table[str(self._doc_of[i])] for i in self._ids()]
            return [_object_record(d["id"], o) for d in docs for o in d.get("objects") or []]

    # ---- finishing ----------------------------------------------------------------------------

    def complete(self, image_id: str, annotator: str, seconds: float = 0.0, *,
                 session: str | None = None,
                 write: Callable[[list[ObjectRecord]], Any] | None = None) -> ImageRecord:
        """Mark an image ``annotator`` (in ``session``) holds as done; ``n_objects`` = its objects.

        One transaction (thread and file lock held throughout): the claim is checked FIRST, then
        the image's stored objects are read and ``write(objects)`` is called (the caller writes
        the mask file from exactly these objects there), and only if it returns is the image
        marked done. If ``write`` raises, the store is unchanged and the exception propagates;
        after a ClaimError ``write`` was never called. ``write`` must not call the store.

        ``seconds`` (>= 0) is added to the image's time. Completing an image already done by the
        same annotator returns it unchanged without calling ``write`` (a double click).
        ClaimError otherwise if they do not hold it.
        """
        annotator = self._check_name(annotator)
        session = self._check_session(session)
        try:
            seconds = float(seconds)
        except (TypeError, ValueError):
            seconds = float("nan")
        if not math.isfinite(seconds) or seconds < 0:
            raise StoreInputError(f"seconds must be a number >= 0, got {seconds!r}.")
        with self._storage.transaction():
            doc = self._require(image_id)
            if doc["status"] == "done" and doc.get("annotator") == annotator:
                return _record(doc)
            self._require_holder(doc, annotator, "complete it", session)
            stored = doc.get("objects") or []
            if write is not None:
                write([_object_record(doc["id"], o) for o in stored])
            now = self.clock()
            n = len(stored)
            self._update(image_id, {
                "status": "done", "completed_at": now, "updated_at": now, "claimed_at": None,
                "n_objects": n, "seconds": (doc.get("seconds") or 0.0) + seconds, "resume": None,
                "note": None, "legacy": None, "session": None,
            })
            self._log("completed", image_id, annotator, n_objects=n, seconds=seconds)
            return _record(self._raw(image_id))

    def skip(self, image_id: str, annotator: str, reason: str = "", *,
             session: str | None = None) -> None:
        """Mark an image skipped (``reason`` kept as its note); it must be todo or held by them."""
        annotator = self._check_name(annotator)
        session = self._check_session(session)
        with self._storage.transaction():
            doc = self._require(image_id)
            if doc["status"] == "skipped":
                return
            if doc["status"] != "todo":
                self._require_holder(doc, annotator, "skip it", session)
            now = self.clock()
            self._update(image_id, {
                "status": "skipped", "annotator": annotator, "claimed_at": None,
                "updated_at": now, "completed_at": None, "resume": None,
                "note": str(reason) if reason else None, "session": None,
            })
            self._log("skipped", image_id, annotator, reason=str(reason or ""))

    def reopen(self, image_id: str, by: str) -> None:
        """Lead: move a done, skipped or unreadable image back to todo, keeping its objects.

        A todo image is left as it is; an image being corrected (claimed after it was done) stays
        with its annotator but no longer falls back to done.
        """
        by = self._check_name(by, "lead")
        with self._storage.transaction():
            doc = self._require(image_id)
            now = self.clock()
            if doc["status"] == "in_progress":
                if doc.get("resume"):
                    was = doc["resume"]["status"]  # read before the update drops it
                    self._update(image_id, {"resume": None, "updated_at": now})
                    self._log("reopened", image_id, by, was=was)
                return
            if doc["status"] == "todo":
                return
            was = doc["status"]  # read before the update changes doc
            self._update(image_id, {
                "status": "todo", "annotator": None, "claimed_at": None, "completed_at": None,
                "updated_at": now, "error": None, "note": f"reopened by {by}", "session": None,
                "n_objects": len(doc.get("objects") or []),
            })
            self._log("reopened", image_id, by, was=was)

    def mark_unreadable(self, image_id: str, error: str) -> None:
        """Record that the image file cannot be read (``error`` says why); it is not handed out."""
        with self._storage.transaction():
            doc = self._require(image_id)
            now = self.clock()
            holder = doc.get("annotator")  # read before the update changes doc
            self._update(image_id, {
                "status": "unreadable", "error": str(error), "annotator": None,
                "claimed_at": None, "updated_at": now, "resume": None, "session": None,
            })
            self._log("unreadable", image_id, holder, error=str(error))

    # ---- reading ------------------------------------------------------------------------------

    def get(self, image_id: str) -> ImageRecord | None:
        """The record of one image, or None if the store does not know it."""
        with self._storage.transaction():
            doc_id = self._doc_of.get(image_id)
            if doc_id is None:
                return None
            doc = self._images.get(doc_id=doc_id)
            return None if doc is None else _record(doc)

    def images(self, status: str | None = None) -> list[ImageRecord]:
        """All image records sorted by id (missing ones included), or those with ``status``."""
        if status is not None and status not in STATUSES:
            raise StoreInputError(f"Unknown status {status!r}; use one of {', '.join(STATUSES)}.")
        with self._storage.transaction():
            table = self._storage.read().get(_IMAGES, {})
            docs = (table[str(self._doc_of[i])] for i in self._ids())
            return [_record(d) for d in docs if status is None or d["status"] == status]

    def image_ids(self, status: str | None = None) -> list[str]:
        """Image ids sorted (missing ones included), or those with ``status``; much cheaper
        than :meth:`images` for navigation through 100,000 images."""
        if status is not None and status not in STATUSES:
            raise StoreInputError(f"Unknown status {status!r}; use one of {', '.join(STATUSES)}.")
        with self._storage.transaction():
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
        """The activity log, oldest first: events after ``since`` (epoch s); the last ``limit``."""
        with self._storage.transaction():
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

    def summary(self) -> dict:
        """Figures for the leads' page (missing images only count under ``missing``).

        ``{"total": images present, "by_status": {status: count}, "missing": count,
        "objects": total objects, "seconds": total seconds, "annotators": {name: {"done",
        "skipped", "objects", "seconds", "median_seconds_per_object" (over their done images
        with objects: seconds / n_objects; None if none), "last_activity" (epoch s or None)}},
        "claims": [{"image_id", "annotator", "claimed_at", "lapsed"}], "last_event": epoch s}``
        """
        with self._storage.transaction():
            now = self.clock()
            by_status = {s: int(self._counts.get(s, 0)) for s in STATUSES}
            names = (set(self._ann_done) | set(self._ann_skipped) | set(self._ann_objects)
                     | set(self._ann_last))
            annotators = {}
            for name in sorted(n for n in names if n):
                spo = list(self._ann_spo.get(name, {}).values())
                stats = {
                    "done": int(self._ann_done.get(name, 0)),
                    "skipped": int(self._ann_skipped.get(name, 0)),
                    "objects": int(self._ann_objects.get(name, 0)),
                    "seconds": round(float(self._ann_seconds.get(name, 0.0)), 3),
                    "median_seconds_per_object": statistics.median(spo) if spo else None,
                    "last_activity": self._ann_last.get(name),
                }
                if any(v for k, v in stats.items() if k != "median_seconds_per_object"):
                    annotators[name] = stats
            claims = []
            for image_id in sorted(self._in_progress):
                doc = self._raw(image_id)
                claims.append({"image_id": image_id, "annotator": doc.get("annotator"),
                               "claimed_at": doc.get("claimed_at"),
                               "lapsed": self._lapsed(doc, now)})
            return {
                "total": sum(by_status.values()),
                "by_status": by_status,
                "missing": len(self._missing),
                "objects": int(self._total_objects),
                "seconds": round(float(self._total_seconds), 3),
                "annotators": annotators,
                "claims": claims,
                "last_event": self._event_times[-1] if self._event_times else None,
            }

    # ---- review (issue 19): a lead approves a done image or sends it back ------------------------
    # Written with the storage primitives only (_require, _update, _log, _take), so both backends
    # share it; PostgresStore replaces the two readers with SQL.

    def _reviewable(self, doc: dict, by: str, action: str, completed_at: float | None,
                    statuses: tuple[str, ...]) -> None:
        """Refuse (ClaimError, nothing changed) a review of an image that is not finished in
        ``statuses`` any more, or that was finished again after the completion the lead saw
        (``completed_at``; None: not checked)."""
        if doc.get("missing"):
            raise StoreInputError(f"{doc['id']} is no longer in the source folder; nothing was "
                                  f"changed. Put the file back to {action}.")
        if doc["status"] not in statuses:
            now = self.clock()
            held = (f" ({doc.get('annotator')} has it open since {_iso(doc.get('claimed_at'))},"
                    f" {max(0, int((now - (doc.get('claimed_at') or now)) // 60))} min ago)"
                    if doc["status"] == "in_progress" else "")
            raise ClaimError(f"{doc['id']} is {doc['status'].replace('_', ' ')}{held}, so {by} "
                             f"cannot {action}; nothing was changed. Try again when it is "
                             "done.")
        if completed_at is not None and doc.get("completed_at") != completed_at:
            raise ClaimError(
                f"{doc['id']} was finished again by {doc.get('annotator')} at "
                f"{_iso(doc.get('completed_at'))}, after the version you looked at; nothing was "
                f"changed. Look at it again, then {action}.")

    def approve(self, image_id: str, by: str, *, completed_at: float | None = None) -> ImageRecord:
        """Lead ``by`` approves done image ``image_id`` as it stands (the completion at
        ``completed_at``, epoch s, when given: ClaimError if it was finished again since).
        Approving it again is a no-op. A later Image done (a correction) needs a new review."""
        by = self._check_name(by, "lead")
        with self._storage.transaction():
            doc = self._require(image_id)
            self._reviewable(doc, by, "approve it", completed_at, ("done",))
            if review_state(doc) == "approved":
                return _record(doc)
            now = self.clock()
            self._update(image_id, {"review": {"decision": "approved", "by": by, "at": now,
                                               "completed_at": doc.get("completed_at")}})
            self._log("approved", image_id, by, annotator_was=doc.get("annotator"))
            return _record(self._raw(image_id))

    def send_back(self, image_id: str, by: str, note: str = "", *,
                  completed_at: float | None = None, to: str | None = None) -> ImageRecord:
        """Lead ``by`` sends a done or skipped image back with ``note`` (why; shown to the
        annotator): in ONE transaction its review says so, it becomes todo (objects kept) and,
        when ``to`` (an annotator name) is given, it is claimed for ``to`` so that it is the
        first image they get (the claim lapses like any other, then anyone can take it).
        ``completed_at`` as in :meth:`approve`. Sending back an image already sent back that
        nobody finished since is a no-op."""
        by = self._check_name(by, "lead")
        to = None if to is None else self._check_name(to)
        note = _check_note(note)
        with self._storage.transaction():
            doc = self._require(image_id)
            if review_state(doc) == "sent_back" and completed_at in (
                    None, doc["review"].get("completed_at")):
                return _record(doc)  # a retry (a double click)
            self._reviewable(doc, by, "send it back", completed_at, ("done", "skipped"))
            now = self.clock()
            was, annotator = doc["status"], doc.get("annotator")
            self._update(image_id, {
                "status": "todo", "annotator": None, "claimed_at": None, "completed_at": None,
                "updated_at": now, "note": f"sent back by {by}", "session": None,
                "n_objects": len(doc.get("objects") or []), "resume": None,
                "review": {"decision": "sent_back", "by": by, "at": now, "note": note or None,
                           "completed_at": doc.get("completed_at"), "annotator": annotator},
            })
            self._log("sent_back", image_id, by, was=was, note=note, to=to)
            if to:
                self._take(self._raw(image_id), to, now)
            return _record(self._raw(image_id))

    def review_queue(self, limit: int | None = None) -> list[ImageRecord]:
        """Done images waiting for review (:func:`review_state`), oldest completion first (then
        by id); at most ``limit``."""
        with self._storage.transaction():
            table = self._storage.read().get(_IMAGES, {})
            docs = [d for d in table.values()
                    if d["status"] == "done" and review_state(d) == "waiting"]
        docs.sort(key=lambda d: (d.get("completed_at") or 0.0, d["id"]))
        return [_record(d) for d in docs[:limit]]

    def review_counts(self) -> dict[str, int]:
        """``{"approved", "sent_back", "waiting"}``: images in each :func:`review_state`."""
        counts = dict.fromkeys(("approved", "sent_back", "waiting"), 0)
        with self._storage.transaction():
            for doc in self._storage.read().get(_IMAGES, {}).values():
                if doc["status"] == "done" or doc.get("review"):
                    state = review_state(doc)
                    if state is not None:
                        counts[state] += 1
        return counts

    # ---- maintenance (dextr_core.store.maintenance) ----------------------------------------

    def sync(self) -> SyncReport:
        """Scan the source folder and import DEXTR-AnnoTool's progress once: see
        :func:`dextr_core.store.maintenance.sync`."""
        return maintenance.sync(self)

    def add_images(self, entries: Iterable[tuple]) -> list[str]:
        """Bulk add ``(image_id, width, height[, error])`` entries; returns the ids added. See
        :func:`dextr_core.store.maintenance.add_images`."""
        return maintenance.add_images(self, entries)

    def reset(self) -> Path:
        """Start over; returns the backup of the old store. See
        :func:`dextr_core.store.maintenance.reset`."""
        return maintenance.reset(self)

    def reconcile(self, destination: str | os.PathLike, mask_suffix: str,
                  save_format: str) -> list[str]:
        """Make records and mask files agree after a crash; one line per fix. See
        :func:`dextr_core.store.maintenance.reconcile`."""
        return maintenance.reconcile(self, destination, mask_suffix, save_format)


def _check_text(text: str, what: str) -> str:
    """``text`` unchanged, or StoreInputError when it holds a control character (NUL and the
    like, which PostgreSQL cannot store and no name needs): the same rule on every backend."""
    bad = sorted({f"U+{ord(c):04X}" for c in text if ord(c) < 32 or ord(c) == 127})
    if bad:
        raise StoreInputError(f"{what} {text!r} contains control characters ({', '.join(bad)}); "
                              "type it again without them.")
    return text


def _check_note(note: str | None) -> str:
    """A review note as stored: text, stripped, at most 2,000 characters, line breaks and tabs
    kept; StoreInputError for other control characters."""
    text = str(note or "").replace("\r\n", "\n").strip()
    if len(text) > 2000:
        raise StoreInputError(f"The note has {len(text):,} characters; keep it under 2,000.")
    _check_text(text.replace("\n", " ").replace("\t", " "), "The note")
    return text


def config_options(cfg: Any) -> dict[str, Any]:
    """The store's constructor keywords for an :class:`~dextr_core.config.AnnoConfig` (claim
    timeout, the folders and mask naming, labels, DEXTR-AnnoTool's progress file and the
    config's folder its paths are relative to)."""
    return {"claim_timeout_s": float(cfg.claim_timeout_min) * 60.0,
            "exclude_dirs": (cfg.destination,), "mask_suffix": cfg.mask_suffix,
            "save_format": cfg.save_format, "destination": cfg.destination,
            "labels": tuple(cfg.labels), "legacy_file": cfg.legacy_progress_file,
            "legacy_base": Path(cfg.path).parent}


def open_store(location: str | os.PathLike | None, source_dir: str | os.PathLike,
               **kwargs: Any) -> ProgressStore:
    """Open the progress store at ``location`` for the images of ``source_dir``.

    ``location`` is the snapshot file's path (``admin.database`` / ``admin.progress_file``) or a
    ``postgresql://user@host/db`` URL (:class:`dextr_core.store.postgres.PostgresStore`, a
    subclass with the same API). The environment variable ``DEXTR_DATABASE_URL``, when set,
    overrides a file ``location`` (and is used when ``location`` is None), so every server of a
    deployment can be pointed at one database without editing configs. ``kwargs`` go to the
    store's constructor.
    """
    env = os.environ.get("DEXTR_DATABASE_URL", "").strip()
    text = os.fspath(location) if location is not None else ""
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    lost = re.match(r"(?i)(postgres(?:ql)?(?:\+\w+)?):/(?!/)", text)
    if lost and not isinstance(location, str):  # a URL passed as a Path lost one slash
        text = f"{lost.group(1)}://{text[lost.end():]}"
    if env and "://" not in text:
        text = env
    if not text:
        raise StoreInputError(
            "No progress store location: set admin.database (a file path or postgresql:// URL) "
            "or the environment variable DEXTR_DATABASE_URL."
        )
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme.startswith("postgresql+"):  # SQLAlchemy-style "postgresql+psycopg://"
        scheme, text = "postgresql", "postgresql://" + text.split("://", 1)[1]
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore(text, source_dir, **kwargs)
    if scheme:
        raise StoreInputError(
            f"admin.database {text!r} is a {scheme}:// address; the progress store is a file "
            "path (e.g. images/.dextr_progress.json) or a postgresql://user@host/database URL."
        )
    return ProgressStore(text, source_dir, **kwargs)
