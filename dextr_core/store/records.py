"""The progress store's records: what one image, object and event look like, statuses, errors.

Conventions (for the whole store package)
-----------------------------------------
* Image ids are POSIX paths relative to the source folder (``sub/dir/img.jpg``).
* Times are epoch seconds (``float``, UTC, as :func:`time.time` gives); durations are seconds.
* Statuses (:data:`STATUSES`, the one status list): ``todo``, ``in_progress`` (claimed by
  ``annotator`` in browser ``session`` at ``claimed_at``), ``done``, ``skipped``, ``unreadable``.
  An image that vanished from the source folder keeps its status and gets ``missing=True``.
* Stored documents (TinyDB tables ``images``, ``events``, ``meta``) are sparse: a key at its
  default (None, False, empty) is left out. An image document is ``{"id", "status", "width",
  "height", "annotator", "session", "claimed_at", "updated_at", "completed_at", "n_objects",
  "seconds", "error", "missing", "note", "resume", "legacy", "review" (see :func:`review_state`),
  "objects": [{"object_id", "index",
  "label", "points" (text, see :func:`_encode_points`), "engine", "annotator", "created_at",
  "seconds", "strokes": [{"mode", "width", "points": [[x, y], ...]}], "edited",
  "cuts": [{"by", "after", "size": [H, W], "counts"}] (see :mod:`dextr_core.cuts`)}]}``;
  :func:`_document_problem` says which documents read from disk are refused.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..cuts import cut_problem, cuts_from_docs
from ..errors import DextrError
from ..strokes import stroke_problem, strokes_from_docs

__all__ = [
    "LEGACY_ANNOTATOR",
    "LEGACY_PROGRESS_NAME",
    "STATUSES",
    "ClaimError",
    "Event",
    "ImageRecord",
    "ObjectRecord",
    "StoreBusyError",
    "StoreCorruptError",
    "StoreInputError",
    "StoreWriteError",
    "SyncReport",
    "review_state",
]

STATUSES = ("todo", "in_progress", "done", "skipped", "unreadable")
#: DEXTR-AnnoTool's progress file, read once from the source folder.
LEGACY_PROGRESS_NAME = ".anno_prog"
#: Annotator name given to images imported from DEXTR-AnnoTool's progress file.
LEGACY_ANNOTATOR = "DEXTR-AnnoTool"
_IMAGES, _EVENTS, _META = "images", "events", "meta"
_OBJECT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_META_ID = 1


class StoreCorruptError(DextrError):
    """The progress store's files cannot be read; the message names the files and what to do.

    ``path`` is the damaged file; ``paths`` every file involved (snapshot and journal). Nothing
    is renamed or replaced when this is raised.
    """

    def __init__(self, message: str, path: Path, paths: tuple[Path, ...] = ()):
        super().__init__(message)
        self.path = Path(path)
        self.paths = tuple(Path(p) for p in paths) or (self.path,)


class StoreBusyError(DextrError):
    """Another process held the store's lock for too long; nothing was changed."""


class StoreWriteError(DextrError):
    """Progress could not be written to disk (disk full, permissions); the change was not saved."""


class ClaimError(DextrError):
    """The image is held by someone else (or not by you); the message names who and since when."""


class StoreInputError(DextrError, ValueError):
    """A call with bad input: unknown image id, bad points, empty annotator name, ..."""


@dataclass
class ObjectRecord:
    """One accepted object of an image.

    ``points`` are the clicks ``[[x, y], ...]`` in full-image pixels (at least 4; ``[]`` only for
    objects imported from DEXTR-AnnoTool's mask files and objects painted by hand from nothing);
    ``strokes`` the brush strokes applied on top of the model's mask for those clicks
    (:class:`dextr_core.strokes.Stroke`, in order); ``edited`` True once strokes changed it by
    hand; ``index`` is the
    1-based position in acceptance order (= its value in the label map); ``engine`` names the
    segmenter that made the mask; ``created_at`` epoch seconds; ``seconds`` time spent on it.
    """

    image_id: str = ""
    index: int = 0
    label: str = "object"
    points: list = field(default_factory=list)
    engine: str = ""
    annotator: str = ""
    created_at: float | None = None
    seconds: float = 0.0
    #: Client-made id (uuid hex, 1-64 of ``[A-Za-z0-9_-]``); the store makes one when empty. An
    #: add whose id is already stored on the image returns the stored record (a retry).
    object_id: str = ""
    #: Brush strokes (dextr_core.strokes.Stroke) applied in order on the model's mask.
    strokes: list = field(default_factory=list)
    #: True when the mask was corrected by hand (strokes), at Accept or by an edit afterwards.
    edited: bool = False
    #: The pixels later objects cut from this one (dextr_core.cuts.Cut, oldest first), so that a
    #: mask rebuilt from the record (:func:`dextr_core.cuts.rebuild_mask`) equals its file.
    cuts: list = field(default_factory=list)


@dataclass
class ImageRecord:
    """The progress of one image (a copy: changing it changes nothing in the store).

    ``width``/``height`` in pixels as shown upright (None when unreadable); times in epoch seconds
    (None when not yet); ``seconds`` total time spent, summed over completions; ``error`` why it is
    unreadable; ``missing`` True when the file vanished from the source folder; ``note`` the skip
    reason or what the store changed on its own (reconcile, reopen); ``session`` the browser
    session token holding the claim.
    """

    id: str
    width: int | None = None
    height: int | None = None
    status: str = "todo"
    annotator: str | None = None
    claimed_at: float | None = None
    updated_at: float | None = None
    completed_at: float | None = None
    n_objects: int = 0
    seconds: float = 0.0
    error: str | None = None
    missing: bool = False
    note: str | None = None
    #: The browser session holding the claim (informational; None when unclaimed or not given).
    session: str | None = None
    #: A lead's last review: ``{"decision": "approved" | "sent_back", "by", "at" (epoch s),
    #: "note", "completed_at"}`` (the completion it judged); see :func:`review_state`.
    review: dict | None = None


@dataclass
class Event:
    """One line of the activity log.

    ``action`` is one of claimed, object_added, object_edited, object_removed, completed, skipped, released,
    reopened, unreadable, synced, legacy_import, reconciled, reset; ``annotator`` is who did it
    (None for the store itself); ``detail`` holds action-specific facts (e.g. ``{"index": 2}``).
    """

    time: float
    action: str
    image_id: str | None
    annotator: str | None
    detail: dict = field(default_factory=dict)


@dataclass
class SyncReport:
    """What :meth:`ProgressStore.sync` found; ``lines()`` says it in words."""

    added: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    reappeared: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    #: why each unreadable image cannot be read (the ImageReadError message)
    unreadable_reasons: dict[str, str] = field(default_factory=dict)
    total: int = 0
    #: counts by status of what was imported from DEXTR-AnnoTool's ``.anno_prog``, if it was
    legacy_imported: dict[str, int] | None = None
    legacy_file: Path | None = None
    messages: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable lines, one per fact (empty list when nothing changed)."""
        out = []
        if self.added:
            out.append(f"{len(self.added)} new image(s) added")
        if self.vanished:
            out.append(
                f"{len(self.vanished)} image(s) vanished from the source folder (kept in the "
                f"store, not handed out): {_first(self.vanished)}"
            )
        if self.reappeared:
            out.append(f"{len(self.reappeared)} image(s) are back: {_first(self.reappeared)}")
        if self.unreadable:
            line = f"{len(self.unreadable)} image(s) cannot be read: {_first(self.unreadable)}"
            first = self.unreadable_reasons.get(self.unreadable[0])
            out.append(line + (f" ({self.unreadable[0]}: {first})" if first else ""))
        if self.legacy_imported is not None:
            counts = ", ".join(f"{n} {s}" for s, n in sorted(self.legacy_imported.items()))
            out.append(f"Imported DEXTR-AnnoTool progress from {self.legacy_file}: {counts}")
        out.extend(self.messages)
        return out


def _first(ids: list[str], n: int = 5) -> str:
    shown = ", ".join(ids[:n])
    return shown + (f" and {len(ids) - n} more" if len(ids) > n else "")


def _iso(t: float | None) -> str:
    if t is None:
        return "?"
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y%m%d-%H%M%S")


_IMAGE_FIELDS = tuple(f for f in ImageRecord.__dataclass_fields__)


def _record(doc: dict) -> ImageRecord:
    record = ImageRecord(**{f: doc[f] for f in _IMAGE_FIELDS if f in doc})
    if record.review is not None:  # a copy, like the rest of the record
        record.review = dict(record.review)
    return record


# ---- review (a lead's approval or send-back of a done image) ---------------------------------

#: The review decisions a lead makes (``review["decision"]``).
REVIEW_DECISIONS = ("approved", "sent_back")


def review_state(record) -> str | None:
    """Where an image (an :class:`ImageRecord` or a stored document) stands in review.

    ``"approved"``: done, and a lead approved this very completion (an Image done after it, a
    correction, needs a new review); ``"waiting"``: done and not approved; ``"sent_back"``: a
    lead sent it back and it is todo or in progress again; None otherwise (skipped,
    unreadable, never reviewed and not done, missing from the source folder).
    """
    get = record.get if isinstance(record, dict) else lambda k: getattr(record, k, None)
    if get("missing"):
        return None
    status, review = get("status"), get("review") or {}
    if status == "done":
        approved = (review.get("decision") == "approved"
                    and review.get("completed_at") == get("completed_at"))
        return "approved" if approved else "waiting"
    if status in ("todo", "in_progress") and review.get("decision") == "sent_back":
        return "sent_back"
    return None


def _is_default(value: Any) -> bool:
    # Documents are kept sparse (a key at its default is left out) so that the snapshot of
    # 100,000 images stays small and quick to parse; readers use .get() with these defaults.
    return value is None or value is False or (isinstance(value, list | dict) and not value)


def _new_image_doc(image_id: str, width, height, status="todo", error=None) -> dict:
    doc = {"id": image_id, "width": width, "height": height, "status": status, "error": error}
    return {k: v for k, v in doc.items() if not _is_default(v)}


_STATUS_SET = frozenset(STATUSES)
_NUMBER_TYPES = (int, float)
#: Keys of an image document that the checks need nothing from but ``id`` and ``status`` (an
#: image never worked on); :meth:`FileBackend._rebuild_indexes` checks those inline.
_PLAIN_TODO_KEYS = frozenset(("id", "status", "width", "height", "error", "note"))


def _document_problem(table: str, doc_id: str, doc: dict) -> str | None:
    """Why a document read from disk cannot be a record of the store (None if it can).

    Checked for every document when a store is opened and for every change read back from the
    journal: the fields the indexes rely on (image: ``id`` text, ``status`` one of STATUSES,
    ``objects`` a list of documents, ``seconds``/``n_objects`` numbers; event: ``time`` a number,
    ``action`` text; numeric document ids), so that a damaged record is reported as such (a
    :class:`StoreCorruptError` naming the file) instead of a KeyError later. Kept cheap: it runs
    for every one of the 200,000 documents of a large store at each open. The snapshot's
    documents are checked while the indexes are built (``FileBackend._rebuild_indexes``), which
    makes the checks on an image never worked on and on an event inline: a rule added here must
    be added there too (tests/test_store_journal.py refuses each malformed kind in both places).
    """
    if table == _IMAGES:
        image_id = doc.get("id")
        if type(image_id) is not str or not image_id:
            return "is an image without an 'id' (its path in the source folder)"
        if doc.get("status") not in _STATUS_SET:
            return (f"(image {image_id}) has status {doc.get('status')!r}, not one of "
                    f"{', '.join(STATUSES)}")
        objects = doc.get("objects")
        if objects is not None:
            if type(objects) is not list:
                return f"(image {image_id}) has objects that are not a list of documents"
            for o in objects:
                if type(o) is not dict:
                    return f"(image {image_id}) has objects that are not a list of documents"
                for field, check, what in (("strokes", stroke_problem, "stroke"),
                                           ("cuts", cut_problem, "cut")):
                    items = o.get(field)
                    if items is None:
                        continue
                    if type(items) is not list:
                        return f"(image {image_id}) has an object whose {field} are not a list"
                    for item in items:
                        problem = check(item)
                        if problem:
                            return f"(image {image_id}) has an object with a bad {what}: {problem}"
        seconds = doc.get("seconds")
        if seconds is not None and type(seconds) not in _NUMBER_TYPES:
            return f"(image {image_id}) has seconds {seconds!r}, not a number"
        n_objects = doc.get("n_objects")
        if n_objects is not None and type(n_objects) is not int:
            return f"(image {image_id}) has n_objects {n_objects!r}, not a whole number"
        review = doc.get("review")
        if review is not None and (type(review) is not dict
                                   or review.get("decision") not in REVIEW_DECISIONS):
            return (f"(image {image_id}) has a review {review!r} that is not a document with a "
                    f"decision ({', '.join(REVIEW_DECISIONS)})")
    elif table == _EVENTS:
        value = doc.get("time")
        if type(value) not in _NUMBER_TYPES:
            return f"is an event without a time (epoch seconds): {value!r}"
        if type(doc.get("action")) is not str:
            return "is an event without an action"
    else:
        return None
    if not doc_id.isdigit():
        return f"has the id {doc_id!r}, not a number"
    return None


def _object_record(image_id: str, o: dict) -> ObjectRecord:
    return ObjectRecord(image_id=image_id, index=o["index"], label=o["label"],
                        points=_decode_points(o["points"]), engine=o["engine"],
                        annotator=o["annotator"], created_at=o["created_at"],
                        seconds=o["seconds"], object_id=o.get("object_id") or "",
                        strokes=strokes_from_docs(o.get("strokes")),
                        edited=bool(o.get("edited")), cuts=cuts_from_docs(o.get("cuts")))


def _with_object_ids(objects: list[dict]) -> list[dict]:
    """The object list with an id on every object (ones stored before ids existed get one)."""
    return [o if o.get("object_id") else dict(o, object_id=uuid.uuid4().hex) for o in objects]


def _number_text(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _encode_points(points: list[list[float]]) -> str:
    """``[[x, y], ...]`` -> ``"x,y x,y ..."`` (1/100 px).

    Points are stored as text because parsing hundreds of thousands of small JSON float lists is
    what made opening a large store slow; the text form parses about five times faster.
    """
    return " ".join(f"{_number_text(x)},{_number_text(y)}" for x, y in points)


def _decode_points(stored: str | list) -> list[list[float]]:
    """The inverse of :func:`_encode_points` (a stored list is returned as floats too)."""
    if isinstance(stored, list):
        return [[float(x), float(y)] for x, y in stored]
    return [[float(x), float(y)] for x, y in (pair.split(",") for pair in stored.split())]


def _free_name(path: Path) -> Path:
    if not path.exists():
        return path
    for i in range(1, 10_000):
        candidate = path.with_name(f"{path.name}-{i}")
        if not candidate.exists():
            return candidate
    raise StoreInputError(f"Too many backups named {path.name}-*; remove old ones.")
