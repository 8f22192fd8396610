"""The progress store's rules: which image is todo, claimed, done or skipped, who did what, when.

One store is shared by a team: one Streamlit server serves many browser sessions as threads, and
several server processes may share one store. Every public method of :class:`Store` is one
transaction of its backend (:mod:`dextr_core.store.file_backend`: a thread lock and a file lock
over a snapshot and an fsync'd journal; :mod:`dextr_core.store.postgres`: one database
transaction). A method that returned has its change stored (a ``kill -9`` afterwards loses
nothing); a method that raised changed nothing.

Claims
------
A claim is held by ``(annotator, session)``: ``session`` is a browser-session token (uuid hex) the
caller makes, passed as the keyword ``session=`` to every mutating call. ``session=None`` (scripts,
old callers) makes the annotator name the holder, as before. One image is held by one session at a
time: the same name in another tab gets another image from :meth:`Store.claim_next` and a
:class:`ClaimError` ("open in another tab or browser of yours") from :meth:`Store.claim`.
A claim lapses ``claim_timeout_s`` after the holder's last activity (claim, heartbeat, object added
or removed); a lapsed image goes to the next annotator who asks, and is re-taken silently by its
holder if nobody took it. A call from a session whose claim moved to someone else is refused.
Object adds are idempotent by ``ObjectRecord.object_id`` and removes by id are too, so a retry never
duplicates; :meth:`Store.complete` calls the caller's ``write(objects)`` (the mask file)
under the checked claim and marks the image done only if it returns.

Conventions are in :mod:`dextr_core.store.records`; the folder scan, the DEXTR-AnnoTool import,
reset and reconcile in :mod:`dextr_core.store.maintenance`. The rules run over a
:class:`~dextr_core.store.backend.Backend` (this module imports none): the same claims, checks and
messages on the file store and on PostgreSQL.
"""

from __future__ import annotations

import math
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..cuts import Cut
from ..strokes import Stroke
from . import maintenance
from .backend import Backend
from .records import (
    _OBJECT_ID_RE,
    STATUSES,
    ClaimError,
    Event,
    ImageRecord,
    ObjectRecord,
    StoreInputError,
    SyncReport,
    _encode_points,
    _iso,
    _object_record,
    _record,
    _with_object_ids,
    review_state,
)

__all__ = ["Store", "check_object_id", "check_text"]


class Store:
    """Progress of every image of one source folder: the rules, over a :class:`Backend`.

    ``backend`` keeps the documents (:class:`~dextr_core.store.file_backend.FileBackend` or
    :class:`~dextr_core.store.postgres.PostgresBackend`; :func:`dextr_core.store.open_store`
    picks one). ``source_dir`` is scanned by :meth:`sync`; folders listed in ``exclude_dirs``
    (e.g. a destination inside the source) and hidden files/folders are ignored. ``clock``
    returns epoch seconds (tests inject one).

    ``destination`` (the mask folder), ``mask_suffix`` and ``save_format`` (``png``/``npy``) tell
    the scan which files are masks when the source is the destination, and the DEXTR-AnnoTool
    import where its masks are; ``labels`` (the configured labels) names imported objects;
    ``legacy_file`` is DEXTR-AnnoTool's progress file (None: ``<source>/.anno_prog`` if it
    exists), ``legacy_base`` the folder its relative ``required:`` paths are resolved against
    (the config's folder; None: they are not compared). See :mod:`dextr_core.store.maintenance`.
    """

    def __init__(
        self,
        backend: Backend,
        source_dir: str | os.PathLike,
        *,
        claim_timeout_s: float = 1800.0,
        clock: Callable[[], float] = time.time,
        exclude_dirs: Iterable[str | os.PathLike] = (),
        legacy_file: str | os.PathLike | None = None,
        legacy_base: str | os.PathLike | None = None,
        mask_suffix: str | None = None,
        save_format: str | None = None,
        destination: str | os.PathLike | None = None,
        labels: Sequence[str] = (),
    ):
        self.backend = backend
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

    @property
    def path(self) -> Path | str:
        """Where the store is: the snapshot file's path, or the database URL (no password)."""
        return self.backend.path

    def close(self) -> None:
        """Release the store's files or connections (it cannot be used afterwards)."""
        self.backend.close()

    def __len__(self) -> int:
        """Number of images known to the store (missing ones included)."""
        with self.backend.transaction():
            return self.backend.count()

    # ---- helpers ------------------------------------------------------------------------------

    def _raw(self, image_id: str) -> dict | None:
        return self.backend.image(image_id)

    def _update(self, image_id: str, fields: dict) -> None:
        self.backend.update(image_id, fields)

    def _log(self, action: str, image_id: str | None, annotator: str | None, **detail) -> None:
        self.backend.log(self.clock(), action, image_id, annotator, detail)

    def _require(self, image_id: str) -> dict:
        doc = self._raw(image_id)
        if doc is None:
            raise StoreInputError(
                f"No image {image_id!r} in the progress store {self.path}. Ids are paths relative "
                f"to the source folder {self.source_dir}; run a sync if the file is new."
            )
        return doc


    def _lapsed(self, doc: dict, now: float) -> bool:
        claimed = doc.get("claimed_at")
        return claimed is None or now - claimed > self.claim_timeout_s

    @staticmethod
    def _check_name(annotator: str, what: str = "annotator") -> str:
        if not isinstance(annotator, str) or not annotator.strip():
            raise StoreInputError(f"The {what} name is empty; enter your name before annotating.")
        check_text(annotator, f"The {what} name")
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
        with self.backend.transaction():
            now = self.clock()
            own = [d for d in self.backend.claims(annotator)
                   if self._same_session(d, session) or self._lapsed(d, now)]
            if own:
                doc = own[0]
                if self._same_session(doc, session):
                    self._refresh(doc, now, session)
                else:  # our own lapsed claim from another tab: this tab takes it over
                    self._take(doc, annotator, now, session)
                return _record(self._raw(doc["id"]))
            lapsed, todo = self.backend.free_images(now - self.claim_timeout_s)
            candidates = [] if todo is None else [todo["id"]]
            for doc in lapsed:
                if not self._lapsed(doc, now):
                    continue
                if doc.get("resume"):
                    self._unclaim(doc, now, doc.get("annotator"), lapsed=True)
                else:
                    candidates.append(doc["id"])
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
        with self.backend.transaction():
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
        with self.backend.transaction():
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
        with self.backend.transaction():
            doc = self._require(image_id)
            if doc["status"] != "in_progress":
                return
            if not self._holds(doc, annotator, session):
                if not self._lapsed(doc, self.clock()):
                    raise self._held_by_other_error(doc, self.clock(), annotator)
                return
            self._unclaim(doc, self.clock(), annotator)

    # ---- objects ------------------------------------------------------------------------------

    def _check_points(self, doc: dict, points, painted: bool = False) -> list[list[float]]:
        if painted and not points:  # an object painted by hand from nothing
            return []
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

    def add_object(self, image_id: str, annotator: str, obj: ObjectRecord, *,
                   session: str | None = None, cuts: Mapping[str, Cut] | None = None,
                   write: Callable[[], Any] | None = None) -> ObjectRecord:
        """Append an accepted object to an image ``annotator`` holds; return the stored record.

        ``obj.index`` (= count + 1) and ``obj.image_id`` are set by the store; ``obj.object_id``
        is kept (the store makes a uuid hex when it is empty); ``obj.annotator`` defaults to
        ``annotator``, ``obj.created_at`` to now. Points are ``[[x, y], ...]`` in full-image
        pixels, at least 4, inside the image. Idempotent: if ``obj.object_id`` is already stored
        on this image, the stored record is returned and nothing changes (a retry never
        duplicates). Raises ClaimError if ``annotator`` (in ``session``) does not hold the image,
        StoreInputError for bad points or a bad object id.

        ``cuts``: the pixels ``obj`` cuts from earlier objects of the image, by their object id
        (:class:`dextr_core.cuts.Cut` of the image's size; its ``by`` and ``after`` are set
        here: ``obj``'s object id and how many strokes that object has now). They are stored
        with ``obj`` in the same transaction, like :meth:`edit_object`'s strokes: the claim is
        checked FIRST, then ``write()`` is called (the caller rewrites those objects' mask files
        there), and only if it returns are ``obj`` and the cuts stored. If ``write`` raises, the
        store is unchanged and the exception propagates; after a ClaimError ``write`` was never
        called; a retry of a stored ``obj`` calls nothing and stores nothing. StoreInputError
        for a cut of an object the image does not have or of another size.
        """
        annotator = self._check_name(annotator)
        session = self._check_session(session)
        object_id = check_object_id(obj.object_id)
        with self.backend.transaction():
            doc = self._require(image_id)
            self._require_holder(doc, annotator, "add objects", session)
            objects = list(doc.get("objects") or [])
            if object_id:
                for stored in objects:
                    if stored.get("object_id") == object_id:
                        return _object_record(doc["id"], stored)
            strokes = self._check_strokes(obj.strokes)
            points = self._check_points(doc, obj.points, painted=bool(strokes))
            now = self.clock()
            objects = _with_object_ids(objects)
            object_id = object_id or uuid.uuid4().hex
            cut_indexes = _cut_objects(doc, objects, cuts or {}, object_id)
            if write is not None:
                write()
            new = {
                "index": len(objects) + 1, "label": check_text(str(obj.label), "The label"),
                "points": _encode_points(points),
                "engine": str(obj.engine or ""), "annotator": obj.annotator or annotator,
                "created_at": float(obj.created_at) if obj.created_at is not None else now,
                "seconds": float(obj.seconds or 0.0),
                "object_id": object_id,
            }
            if strokes or obj.edited:
                new.update(strokes=strokes, edited=True)
            objects.append(new)
            self._update(image_id, {"objects": objects, "claimed_at": now, "updated_at": now})
            self._log("object_added", image_id, annotator, index=new["index"], label=new["label"],
                      **({"cut": cut_indexes} if cut_indexes else {}))
            return _object_record(doc["id"], new)

    @staticmethod
    def _check_strokes(strokes) -> list[dict]:
        """Strokes (dextr_core.strokes.Stroke or their documents) -> stored documents."""
        try:
            return [(s if isinstance(s, Stroke) else Stroke.from_doc(s)).to_doc()
                    for s in strokes or ()]
        except (TypeError, ValueError) as exc:
            raise StoreInputError(f"An object's strokes are not valid: {exc}.") from None

    def edit_object(self, image_id: str, annotator: str, object_id: str, strokes, *,
                    session: str | None = None, write: Callable[[], Any] | None = None
                    ) -> ObjectRecord:
        """Replace the strokes of one object of an image ``annotator`` (in ``session``) holds
        (``edited`` is True while it has strokes); return the stored record.

        One transaction, like :meth:`complete`: the claim is checked FIRST, then ``write()`` is
        called (the caller writes the object's mask file there), and only if it returns are the
        strokes stored. If ``write`` raises, the store is unchanged and the exception propagates;
        after a ClaimError ``write`` was never called. The same strokes again store nothing new (a
        retry). ``strokes``: Stroke objects or their documents. Raises ClaimError, and
        StoreInputError for an object that is no longer there or bad strokes.
        """
        annotator = self._check_name(annotator)
        session = self._check_session(session)
        object_id = check_object_id(object_id)
        docs = self._check_strokes(strokes)
        with self.backend.transaction():
            doc = self._require(image_id)
            self._require_holder(doc, annotator, "edit objects", session)
            objects = list(doc.get("objects") or [])
            found = [i for i, o in enumerate(objects) if object_id and o.get("object_id") == object_id]
            if not found:
                raise StoreInputError(f"{image_id} has no object {object_id!r} any more (deleted "
                                      "meanwhile?); reload the page to see its objects.")
            i = found[0]
            if not docs and not objects[i].get("points"):
                raise StoreInputError("An object painted by hand needs at least one Paint stroke; "
                                      "delete it instead.")
            if write is not None:
                write()
            if objects[i].get("strokes", []) == docs:
                return _object_record(doc["id"], objects[i])
            objects[i] = {k: v for k, v in dict(objects[i], strokes=docs, edited=True).items()
                          if docs or k not in ("strokes", "edited")}
            now = self.clock()
            self._update(image_id, {"objects": objects, "claimed_at": now, "updated_at": now})
            self._log("object_edited", image_id, annotator, index=objects[i]["index"],
                      strokes=len(docs))
            return _object_record(doc["id"], objects[i])

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
            key = check_object_id(key)
            if not key:
                raise StoreInputError("remove_object needs an object index (1, 2, ...) or id.")
        elif isinstance(key, bool) or not isinstance(key, int):
            raise StoreInputError(
                f"remove_object needs an object index (1, 2, ...) or object id, got {key!r}."
            )
        with self.backend.transaction():
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
        with self.backend.transaction():
            if image_id is not None:
                doc = self.backend.peek(image_id)
                docs = [doc if doc is not None else self._require(image_id)]
            else:
                docs = self.backend.images(with_objects=True)
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
        with self.backend.transaction():
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
        with self.backend.transaction():
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
        with self.backend.transaction():
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
        with self.backend.transaction():
            doc = self._require(image_id)
            now = self.clock()
            holder = doc.get("annotator")  # read before the update changes doc
            self._update(image_id, {
                "status": "unreadable", "error": str(error), "annotator": None,
                "claimed_at": None, "updated_at": now, "resume": None, "session": None,
            })
            self._log("unreadable", image_id, holder, error=str(error))

    def get(self, image_id: str) -> ImageRecord | None:
        """The record of one image, or None if the store does not know it."""
        with self.backend.transaction():
            doc = self.backend.peek(image_id)
            return None if doc is None else _record(doc)

    def images(self, status: str | None = None) -> list[ImageRecord]:
        """All image records sorted by id (missing ones included), or those with ``status``."""
        _check_status(status)
        with self.backend.transaction():
            return [_record(d) for d in self.backend.images(status)]

    def image_ids(self, status: str | None = None) -> list[str]:
        """Image ids sorted (missing ones included), or those with ``status``; much cheaper
        than :meth:`images` for navigation through 100,000 images."""
        _check_status(status)
        with self.backend.transaction():
            return self.backend.image_ids(status)

    def events(self, since: float | None = None, limit: int | None = None) -> list[Event]:
        """The activity log, oldest first: events after ``since`` (epoch s); the last ``limit``."""
        with self.backend.transaction():
            return self.backend.events(since, limit)

    def summary(self) -> dict:
        """Figures for the leads' page (missing images only count under ``missing``).

        ``{"total": images present, "by_status": {status: count}, "missing": count,
        "objects": total objects, "seconds": total seconds, "annotators": {name: {"done",
        "skipped", "objects", "seconds", "median_seconds_per_object" (over their done images
        with objects: seconds / n_objects; None if none), "last_activity" (epoch s or None)}},
        "claims": [{"image_id", "annotator", "claimed_at", "lapsed"}], "last_event": epoch s}``
        """
        with self.backend.transaction():
            now = self.clock()
            f = self.backend.figures()
        by_status = {s: int(f.by_status.get(s, 0)) for s in STATUSES}
        names = set(f.done) | set(f.skipped) | set(f.objects_by) | set(f.last_activity)
        annotators = {}
        for name in sorted(n for n in names if n):
            spo = f.seconds_per_object.get(name) or []
            stats = {
                "done": int(f.done.get(name, 0)),
                "skipped": int(f.skipped.get(name, 0)),
                "objects": int(f.objects_by.get(name, 0)),
                "seconds": round(float(f.seconds_by.get(name, 0.0)), 3),
                "median_seconds_per_object": statistics.median(spo) if spo else None,
                "last_activity": f.last_activity.get(name),
            }
            if any(v for k, v in stats.items() if k != "median_seconds_per_object"):
                annotators[name] = stats
        claims = [{"image_id": d["id"], "annotator": d.get("annotator"),
                   "claimed_at": d.get("claimed_at"), "lapsed": self._lapsed(d, now)}
                  for d in f.claims]
        return {
            "total": sum(by_status.values()),
            "by_status": by_status,
            "missing": int(f.missing),
            "objects": int(f.objects),
            "seconds": round(float(f.seconds), 3),
            "annotators": annotators,
            "claims": claims,
            "last_event": f.last_event,
        }


    # ---- review: a lead approves a done image or sends it back ---------------------------------

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
        with self.backend.transaction():
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
        with self.backend.transaction():
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
        with self.backend.transaction():
            waiting = [d for d in self.backend.review_facts() if review_state(d) == "waiting"]
            waiting.sort(key=lambda d: (d.get("completed_at") or 0.0, d["id"]))
            docs = [self.backend.peek(d["id"]) for d in waiting[:limit]]
        return [_record(d) for d in docs if d is not None]

    def review_counts(self) -> dict[str, int]:
        """``{"approved", "sent_back", "waiting"}``: images in each :func:`review_state`."""
        counts = dict.fromkeys(("approved", "sent_back", "waiting"), 0)
        with self.backend.transaction():
            for facts in self.backend.review_facts():
                state = review_state(facts)
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




def _cut_objects(doc: dict, objects: list[dict], cuts: Mapping[str, Cut], by: str) -> list[int]:
    """Add each of ``cuts`` (object id -> Cut) to its object's document in ``objects`` (in
    place, ``by`` the cutting object's id, ``after`` the object's strokes count); returns the
    indexes of the objects cut. StoreInputError, with nothing changed, for an object id the
    image does not have or a cut of another size than the image."""
    size = (doc.get("height"), doc.get("width"))
    found = {o["object_id"]: i for i, o in enumerate(objects)}
    planned = []
    for object_id, cut in cuts.items():
        if not isinstance(cut, Cut):
            raise StoreInputError(f"A cut must be a dextr_core.cuts.Cut, got {cut!r:.60}.")
        if object_id not in found:
            raise StoreInputError(f"{doc['id']} has no object {object_id!r} to cut any more "
                                  "(deleted meanwhile?); reload the page to see its objects.")
        if None not in size and cut.size != size:
            raise StoreInputError(f"A cut of {cut.size[1]} x {cut.size[0]} px does not fit "
                                  f"{doc['id']} ({size[1]} x {size[0]} px).")
        planned.append((found[object_id], cut))
    for i, cut in planned:
        o = objects[i]
        stored = replace(cut, by=by, after=len(o.get("strokes") or ())).to_doc()
        objects[i] = dict(o, cuts=[*(o.get("cuts") or ()), stored])
    return [objects[i]["index"] for i, _ in planned]


def _check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise StoreInputError(f"Unknown status {status!r}; use one of {', '.join(STATUSES)}.")


def check_text(text: str, what: str) -> str:
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
    check_text(text.replace("\n", " ").replace("\t", " "), "The note")
    return text


def check_object_id(object_id) -> str:
    """``object_id`` checked: "" (the store makes one) or 1-64 letters, digits, ``-``, ``_``."""
    if object_id is None or object_id == "":
        return ""
    if not isinstance(object_id, str) or not _OBJECT_ID_RE.fullmatch(object_id):
        raise StoreInputError(
            f"Object id {object_id!r} is not 1-64 letters, digits, '-' or '_'; pass a uuid "
            "hex (uuid.uuid4().hex) or leave it empty for the store to make one."
        )
    return object_id
