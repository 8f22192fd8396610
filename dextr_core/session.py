"""One annotator's work on one image in one browser session, as a plain object (no Streamlit).

:class:`AnnotationSession` keeps what a person is doing right now (the open image, the clicks of
the object being made, its candidate mask) and nothing else: the objects of the image are always
read from the progress store, which is the single truth. It is the only writer of mask files:

- **Accept** writes the object's mask as its own 1-bit file keyed by a client-made object id
  (``<destination>/.drafts/<image id>/<object id>.png``), then adds the object to the store with
  that id. A failure at either step leaves the clicks and the id in place, and the retry stores
  the object once (the store's add is idempotent per object id).
- **Cut**: ``accept(label, cut_earlier=True)`` writes the candidate's file, then, in the one
  store transaction that adds it (``store.add_object(cuts=, write=)``: the claim is checked
  first), rewrites the object file of every earlier object the candidate overlaps without the
  candidate's pixels and records those pixels in each one's record (:mod:`dextr_core.cuts`), so
  that a mask rebuilt from a record equals its file. A failure puts the files already rewritten
  back and stores nothing; a retry makes the same cut once. Without it overlapping objects keep
  all their pixels in their own files (per-object exports such as COCO keep both); only the
  label map gives a shared pixel to the later object. See :meth:`AnnotationSession.overlaps`.
- **Clicks** of the object being made are kept in ``<destination>/.drafts/<id>.clicks.json``
  at every change, so a page refresh (a new session of the same annotator) gets them back.
- **Image done** calls ``store.complete(..., write=...)``: inside the store's transaction, after
  the claim is checked, the label map is built from the objects the store holds for the image at
  that moment and written atomically; only then is the image marked done. A session whose claim
  lapsed and moved to someone else is told (:class:`~dextr_core.store.ClaimError`) and writes
  nothing.

- **Strokes** (Paint / Erase, :mod:`dextr_core.strokes`) correct the current object: the
  candidate (its mask is the model's mask for the clicks with the strokes applied on top, or the
  strokes alone for an object painted from nothing), kept here until Accept, which stores them
  beside the clicks; or an accepted object made current by :meth:`AnnotationSession.edit_object`,
  whose every change is saved at once (:meth:`AnnotationSession.save_edit`) with the rules of an
  accept: the claim is checked before anything is written, a failed write is reported, a retry
  stores the same strokes once. :meth:`AnnotationSession.undo` undoes the last action, a click or
  a stroke.

A session holds at most one image, claimed by ``(annotator, session token)``; an image held by
another live session (another person, or the same name in another tab) opens read-only with the
reason, and done or skipped images opened with Prev/Next open read-only with their status until
:meth:`AnnotationSession.edit` claims them for correction.

Messages are return values and exceptions (subclasses of :class:`~dextr_core.errors.DextrError`
whose text says what to do); nothing is printed. Times come from the injected ``clock``.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cuts import Cut, rebuild_mask
from .errors import DextrError
from .images import ImageReadError, load_image
from .masks import (
    MaskFileError,
    clashing_ids,
    clicks_path,
    cut_mask,
    draft_path,
    label_map,
    label_map_object_ids,
    load_clicks,
    load_label_map,
    load_object_mask,
    made_label,
    mask_path,
    object_mask_path,
    overlap_pixels,
    save_clicks,
    save_label_map,
    save_object_mask,
    split_label_map,
)
from .strokes import Stroke, apply_strokes

#: Seconds between two heartbeats on the held image (claim timeouts are minutes).
HEARTBEAT_EVERY_S = 30.0
#: The engine recorded for an object painted by hand from nothing (no clicks).
HAND = "painted by hand"
#: Unreadable images passed over in one :meth:`AnnotationSession.open_next` at most.
MAX_UNREADABLE_PER_OPEN = 50


class SessionError(DextrError):
    """An action that cannot be done now; the message says why and what to do instead."""


class ReadOnlyError(SessionError):
    """The open image is shown read-only (held elsewhere, done or skipped): nothing was changed."""


class PointError(SessionError, ValueError):
    """A click outside the image, or not a number."""


class EmptyImageError(SessionError):
    """*Image done* on an image without objects: call ``done(allow_empty=True)`` to confirm."""


class WriteError(SessionError):
    """A file could not be written (disk full, permissions); nothing was recorded as saved."""


class PhotoUnreadableError(SessionError):
    """The open photo was replaced on disk by a file that cannot be read (or is over the pixel
    budget): the image was closed and, if this session held it, marked unreadable and its claim
    released. The message names the file and why."""


@dataclass(frozen=True)
class SessionPaths:
    """Where a session reads photos and writes masks (the config's values).

    ``source``: folder of the photos (image ids are POSIX paths relative to it);
    ``destination``: folder of the mask files; ``mask_suffix`` / ``save_format``: mask file
    naming (see :func:`dextr_core.masks.mask_path`).
    """

    source: Path
    destination: Path
    mask_suffix: str = "_mask"
    save_format: str = "png"

    @classmethod
    def from_config(cls, cfg) -> SessionPaths:
        """The paths of an :class:`~dextr_core.config.AnnoConfig`."""
        return cls(Path(cfg.source), Path(cfg.destination), cfg.mask_suffix, cfg.save_format)


@dataclass(frozen=True)
class ImageStatus:
    """The open image as this session sees it.

    ``status``: the store's status (todo, in_progress, done, skipped); ``holder``: the annotator
    who holds or finished it (None when nobody); ``editable``: True when this session holds the
    claim; ``reason``: why it is read-only (a sentence), None when editable.
    """

    image_id: str
    status: str
    holder: str | None
    editable: bool
    reason: str | None = None


@dataclass(frozen=True)
class Candidate:
    """The mask of the current object (bool (H, W) at full resolution) or why there is none.

    ``points``: the clicks it was made from (full-image (x, y)); ``strokes``: the brush strokes
    applied on the model's mask (or, without clicks, on an empty one); ``error``: the
    segmenter's refusal or failure as a sentence (``mask`` is None then); ``model_ms``:
    segmentation time in ms.
    """

    points: tuple
    mask: np.ndarray | None
    error: str | None
    engine: str
    model_ms: float = 0.0
    strokes: tuple = ()


@dataclass(frozen=True)
class Overlap:
    """The candidate's overlap with one accepted object.

    ``obj``: the object's ObjectRecord; ``pixels``: pixels both hold; ``of_object`` /
    ``of_candidate``: that count as a fraction (0..1) of the object's / the candidate's area;
    ``can_cut``: False for objects without an object id (imported from DEXTR-AnnoTool masks),
    whose own mask cannot be rewritten.
    """

    obj: object
    pixels: int
    of_object: float
    of_candidate: float
    can_cut: bool


@dataclass(frozen=True)
class DoneResult:
    """What *Image done* saved: the image, its object count and the mask file."""

    image_id: str
    n_objects: int
    path: Path


@dataclass
class _Open:
    image_id: str
    path: Path
    shape: tuple[int, int]  # (H, W)
    status: ImageStatus
    opened_at: float
    heartbeat_at: float
    object_started: float
    points: list = field(default_factory=list)
    candidate: Candidate | None = None
    pending_id: str | None = None  # object id of an Accept that failed, kept for the retry
    pending_points: tuple | None = None
    pending_cuts: list | None = None  # the cut planned for the pending id (_Cutting), kept too
    mask_file: Path | None = None  # where the saved mask is read from (found once per open)
    file_stamp: tuple | None = None  # the photo file's (mtime ns, size, inode) when opened
    strokes: list = field(default_factory=list)  # the current object's strokes (Stroke)
    history: list = field(default_factory=list)  # "click" / "stroke", oldest first (for undo)
    model: Candidate | None = None  # the model's mask for the clicks, before the strokes
    candidate_key: tuple = (None, ())  # what op.candidate was made from (see candidate)
    editing: _Editing | None = None  # the accepted object made current by edit_object


@dataclass
class _Editing:
    """An accepted object being corrected: ``base`` its mask when it was made current (packed
    bits), ``before`` its stored strokes then; the session's strokes are added after those."""

    object_id: str
    base: np.ndarray
    before: tuple
    saved: tuple = ()  # the session strokes the store holds now


@dataclass(frozen=True)
class _Cutting:
    """One earlier object a candidate cuts: its mask ``before`` and ``kept`` after the cut
    (packed bits) and the record's :class:`~dextr_core.cuts.Cut` (the pixels it loses)."""

    object_id: str
    index: int
    before: np.ndarray
    kept: np.ndarray
    cut: Cut


class AnnotationSession:
    """One annotator's work on one image at a time (like segment-anything's ``SamPredictor``
    keeps one image's state in a plain object).

    ``store``: a :class:`~dextr_core.store.ProgressStore` (claims by ``(annotator, session)``);
    ``segmenter``: the engine (``name``, ``segment(image, points) -> bool (H, W)``);
    ``paths``: :class:`SessionPaths`; ``annotator``: the person's name; ``session``: this browser
    session's token (uuid hex; a fresh one when None); ``clock``: epoch seconds;
    ``load``: path -> upright RGB uint8 (H, W, 3) photo (the UI passes its decoded-photo cache).
    ``store`` and ``segmenter`` are plain attributes the caller may rebind (a new store handle).
    """

    def __init__(self, store, segmenter, paths: SessionPaths, annotator: str, *,
                 session: str | None = None, clock: Callable[[], float] = time.time,
                 load: Callable[[Path], np.ndarray] = load_image):
        if not isinstance(annotator, str) or not annotator.strip():
            raise SessionError("The annotator name is empty; enter your name to annotate.")
        self.store = store
        self.segmenter = segmenter
        self.paths = paths
        self.annotator = annotator.strip()
        self.token = session or uuid.uuid4().hex
        self.clock = clock
        self.load = load
        self._open: _Open | None = None
        #: Images passed over by the last open_next / prev / next, as "id: why" sentences.
        self.passed_over: list[str] = []
        self._notes: list[str] = []  # why refresh() closed the open image, for the next open
        self._masks: dict[tuple[str, str], np.ndarray] = {}  # (image id, object id) -> packed
        #: Goes up whenever a stored object's mask changes in place (a cut): drawings keyed on it.
        self.masks_revision = 0
        #: Why the clicks could not be kept for a refresh (a sentence), None when they are.
        self.clicks_warning: str | None = None
        self._overlaps: tuple | None = None  # (candidate, objects, revision) -> overlaps

    # ---- what is open ------------------------------------------------------------------------

    @property
    def image_id(self) -> str | None:
        """The open image's id, None when none is open."""
        return self._open.image_id if self._open else None

    @property
    def status(self) -> ImageStatus | None:
        """The open image's :class:`ImageStatus` (None when none is open)."""
        return self._open.status if self._open else None

    @property
    def editable(self) -> bool:
        """True when an image is open and this session holds its claim."""
        return bool(self._open and self._open.status.editable)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels of the open image, upright; (0, 0) when none is open."""
        return (self._open.shape[1], self._open.shape[0]) if self._open else (0, 0)

    @property
    def path(self) -> Path | None:
        """The open photo's file."""
        return self._open.path if self._open else None

    @property
    def points(self) -> list[list[float]]:
        """The current object's clicks, full-image (x, y) pixels (a copy)."""
        return [list(p) for p in self._open.points] if self._open else []

    @property
    def objects(self) -> list:
        """The open image's objects exactly as the store holds them now (ObjectRecords)."""
        if self._open is None:
            return []
        return list(self.store.objects(self._open.image_id))

    @property
    def review_note(self) -> str | None:
        """Why a lead sent the open image back (a sentence with their note, plain text), None
        when it is not an image sent back and not finished since."""
        from .store import review_state

        record = self.store.get(self._open.image_id) if self._open else None
        if record is None or review_state(record) != "sent_back":
            return None
        review = record.review or {}
        note = (review.get("note") or "").strip()
        return (f"{review.get('by') or 'A lead'} sent {record.id} back for correction"
                + (f": {note}" if note else " (no note).")
                + " Correct it, then press Image done; it is reviewed again.")

    def mask(self, obj) -> np.ndarray:
        """The full-resolution bool (H, W) mask of one of :attr:`objects`.

        From its object file, else the first version's draft label map or the saved mask file
        (the label equal to its index), else recomputed from its clicks (all zeros when nothing
        works, e.g. a model that refuses the points).
        """
        op = self._require_open()
        key = (op.image_id, _object_key(obj))
        packed = self._masks.get(key)
        if packed is None:
            mask = self._find_mask(op, obj)
            packed = np.packbits(mask.ravel())
            self._masks[key] = packed
        n = op.shape[0] * op.shape[1]
        return np.unpackbits(packed, count=n).astype(bool).reshape(op.shape)

    # ---- opening -----------------------------------------------------------------------------

    def open_next(self) -> ImageStatus | None:
        """Claim and open the next image for this annotator (their own in this session first);
        None when nothing is left. Unreadable files are marked so and passed over: their
        messages are in :attr:`passed_over`."""
        self.passed_over, self._notes = self._notes, []
        self._leave()
        for _ in range(MAX_UNREADABLE_PER_OPEN):
            record = self.store.claim_next(self.annotator, session=self.token)
            if record is None:
                return None
            try:
                return self._show(record.id, claimed=True)
            except ImageReadError as exc:
                self.store.mark_unreadable(record.id, str(exc))
                self.passed_over.append(f"{record.id}: {exc}")
        return None

    def open(self, image_id: str) -> ImageStatus:
        """Open one image: claimed when free (or held by this session), read-only with the
        reason when another live session holds it, read-only with its status when done or
        skipped (see :meth:`edit`). The previously held image is given back afterwards.

        Raises ImageReadError (the image is marked unreadable) and the store's errors for missing
        or unreadable images; on any error the previous image stays open.
        """
        self.passed_over, self._notes = self._notes, []
        return self._open_one(image_id)

    def _open_one(self, image_id: str) -> ImageStatus:
        record = self.store.get(image_id)
        if record is None:
            raise SessionError(f"There is no image {image_id} in the progress store; pick "
                               "another image.")
        if record.missing or record.status == "unreadable":
            why = "is no longer in the source folder" if record.missing else "cannot be read"
            raise SessionError(f"{image_id} {why}; it is passed over. A lead can see it on "
                               "the Progress page.")
        previous = self._open
        try:
            shape = self._shape(image_id)
        except ImageReadError as exc:
            self.store.mark_unreadable(image_id, str(exc))
            raise
        claimed, reason = False, None
        if record.status in ("done", "skipped"):
            reason = _finished_reason(record)
        else:
            from .store import ClaimError

            try:
                self.store.claim(image_id, self.annotator, session=self.token)
                claimed = True
            except ClaimError as exc:
                reason = str(exc)
        if previous is not None and previous.image_id != image_id and previous.status.editable:
            self._give_back(previous.image_id)
        return self._show(image_id, claimed=claimed, reason=reason, shape=shape)

    def edit(self) -> ImageStatus:
        """Claim the open read-only image (a done or skipped one to correct it, or one whose
        holder left): it becomes editable; ClaimError when another live session still holds it."""
        op = self._require_open()
        if op.status.editable:
            return op.status
        self.store.claim(op.image_id, self.annotator, session=self.token)
        status = self._show(op.image_id, claimed=True, shape=op.shape)
        self._drop_stale_object_files(self._open)
        return status

    def _saved_with(self, op: _Open, obj, own: np.ndarray) -> bool:
        """True unless the image's saved mask file exists and was not made from ``own`` (the
        object's file changed after Image done: a correction left without finishing it)."""
        try:
            labels = load_label_map(op.mask_file) if op.mask_file.is_file() else None
            ids = label_map_object_ids(op.mask_file) if labels is not None else None
        except (MaskFileError, OSError):
            return True
        if labels is None or labels.shape != op.shape:
            return True
        object_id = getattr(obj, "object_id", "")
        index = ids.index(object_id) + 1 if ids and object_id in ids else int(obj.index)
        return made_label(own, labels, index)

    def _drop_stale_object_files(self, op: _Open) -> None:
        """A correction starts from the saved mask file: object files changed after it (by a
        correction left without Image done, whose objects the store gave back) are removed, so
        the objects show, and are saved again, as that file has them."""
        if op.mask_file is None:
            op.mask_file = self._mask_file(op.image_id)
        for obj in self.objects:
            path = object_mask_path(self.paths.destination, op.image_id, obj.object_id) \
                if obj.object_id else None
            own = load_object_mask(path, op.shape) if path is not None else None
            if own is not None and not self._saved_with(op, obj, own):
                with contextlib.suppress(OSError):
                    path.unlink()
                self._masks.pop((op.image_id, obj.object_id), None)

    def next(self, own: bool = False) -> ImageStatus | None:
        """Open the next image in id order (see :meth:`open`); None when there is none. With
        ``own`` only images this annotator finished or holds (their work, once the queue is
        empty)."""
        return self._step(+1, own)

    def prev(self, own: bool = False) -> ImageStatus | None:
        """Open the previous image in id order (see :meth:`open`, ``own`` as for :meth:`next`);
        None when there is none."""
        return self._step(-1, own)

    def refresh(self) -> ImageStatus | None:
        """Bring the open image's status in line with the store (call on every page draw).

        None when nothing is open any more: the photo's file is gone (the claim is given back and
        the next open's :attr:`passed_over` says why) or the store no longer knows the image.
        Keeps this session's claim alive (a heartbeat every :data:`HEARTBEAT_EVERY_S`); when the
        claim lapsed and someone else took the image, the image turns read-only with the reason.
        When the photo's file changed on disk it is read again; if it can no longer be read (or
        is over the pixel budget), :class:`PhotoUnreadableError` (see :meth:`_check_photo`).
        """
        op = self._open
        if op is None:
            return None
        record = self.store.get(op.image_id)
        if record is None:
            self._open = None
            return None
        if not op.path.is_file():  # renamed, moved or deleted while open: nothing left to show
            self._leave()
            self._notes.append(
                f"{op.image_id}: the photo is no longer in the source folder (renamed, moved or "
                "deleted while it was open); its objects are kept. Put it back under that name, "
                "or ask a lead to rescan the folder.")
            return None
        self._check_photo(op)  # replaced by another file: read again, or marked unreadable
        now = self.clock()
        if not op.status.editable:
            if _finished_reason(record) != op.status.reason and record.status in ("done",
                                                                                  "skipped"):
                op.status = ImageStatus(op.image_id, record.status, record.annotator, False,
                                        _finished_reason(record))
            return op.status
        mine = (record.status == "in_progress" and record.annotator == self.annotator
                and getattr(record, "session", None) in (None, self.token))
        if mine and now - op.heartbeat_at < HEARTBEAT_EVERY_S:
            return op.status
        from .store import ClaimError

        try:
            if record.status == "todo":  # released by a lead meanwhile: take it again
                self.store.claim(op.image_id, self.annotator, session=self.token)
            else:
                self.store.heartbeat(op.image_id, self.annotator, session=self.token)
            op.heartbeat_at = now
        except ClaimError as exc:
            self._lost(exc)
        return op.status

    def release(self) -> None:
        """Give the open image back unfinished (its objects stay in the store) and close it."""
        self._leave()

    # ---- clicks, strokes and the candidate ---------------------------------------------------

    @property
    def strokes(self) -> list[Stroke]:
        """The current object's strokes this session holds (a copy): the candidate's, or those
        added to the object being edited since :meth:`edit_object`."""
        return list(self._open.strokes) if self._open else []

    @property
    def editing(self) -> str | None:
        """The object id of the accepted object being edited (:meth:`edit_object`), else None."""
        return self._open.editing.object_id if self._open and self._open.editing else None

    def add_point(self, x: float, y: float) -> None:
        """Add one click (full-image pixels); PointError when outside the image."""
        op = self._require_editable()
        self._refuse_clicks_while_editing(op)
        op.points.append(list(self._checked_point(op, x, y)))
        op.history.append("click")
        self._points_changed(op)

    def set_points(self, points: Sequence[Sequence[float]]) -> None:
        """Replace the current clicks (e.g. by what the canvas shows); PointError when one is
        outside the image (the clicks are then unchanged)."""
        op = self._require_editable()
        checked = [list(self._checked_point(op, p[0], p[1])) for p in points]
        if checked != op.points:
            self._refuse_clicks_while_editing(op)
            _track(op.history, "click", len(op.points), len(checked))
            op.points = checked
            self._points_changed(op)

    def add_stroke(self, stroke: Stroke) -> None:
        """Add one brush stroke to the current object (while editing an accepted object it is
        saved at once: see :meth:`save_edit`)."""
        self.set_strokes([*self.strokes, stroke])

    def set_strokes(self, strokes: Sequence[Stroke]) -> None:
        """Replace the current object's strokes (e.g. by what the canvas shows). While editing an
        accepted object the change is saved at once (:meth:`save_edit`; its errors propagate,
        the strokes stay for the retry)."""
        op = self._require_editable()
        strokes = list(strokes)
        if any(not isinstance(st, Stroke) for st in strokes):
            raise TypeError("strokes must be dextr_core.strokes.Stroke objects")
        if strokes == op.strokes:
            return
        _track(op.history, "stroke", len(op.strokes), len(strokes))
        op.strokes = strokes
        if not op.points and not op.strokes and op.editing is None:
            op.object_started = self.clock()
        if op.editing is not None:
            self.save_edit()

    def undo(self) -> None:
        """Undo the last action of the current object, a click or a stroke (no-op without any).
        Undoing a stroke of an object being edited saves the change at once."""
        op = self._require_open()
        if not op.history:
            return
        if op.history[-1] == "stroke":
            self.set_strokes(op.strokes[:-1])
            return
        op.history.pop()
        op.points.pop()
        self._points_changed(op)

    def clear(self) -> None:
        """Remove all clicks and strokes of the current object (of an object being edited: the
        strokes added since :meth:`edit_object`, saved at once)."""
        op = self._require_open()
        if op.editing is not None:
            self.set_strokes([])
            return
        op.points, op.strokes, op.history = [], [], []
        op.object_started = self.clock()
        self._points_changed(op)

    @property
    def candidate(self) -> Candidate | None:
        """The current object's mask: the model's mask of the clicks (segmented once per set of
        >= 4 clicks) with the strokes applied; with no clicks, the strokes alone (an object
        painted from nothing); while editing an accepted object, its mask with the new strokes.
        None with fewer than 4 clicks and no strokes. A refusal (ValueError, e.g. all clicks on
        one spot) or a model failure gives a Candidate with ``error`` set: the clicks are kept."""
        op = self._open
        if op is None:
            return None
        strokes = tuple(op.strokes)
        ed = op.editing
        model = None if ed is not None else self._model(op)
        key = (ed.object_id if ed else model, strokes)  # the model by identity
        if op.candidate is not None and op.candidate_key[0] is key[0] and \
                op.candidate_key[1] == strokes:
            return op.candidate
        if ed is not None:
            base = np.unpackbits(ed.base, count=op.shape[0] * op.shape[1]).reshape(op.shape)
            cand = Candidate((), apply_strokes(base.astype(bool), strokes), None, "", 0.0,
                             strokes)
        elif model is None and not strokes:
            cand = None
        elif model is None:  # painted from nothing (or 1-3 clicks: the strokes alone)
            cand = Candidate((), apply_strokes(None, strokes, op.shape), None, HAND, 0.0,
                             strokes)
        elif model.mask is None or not strokes:
            cand = model
        else:
            cand = Candidate(model.points, apply_strokes(model.mask, strokes), None,
                             model.engine, model.model_ms, strokes)
        op.candidate, op.candidate_key = cand, key
        return cand

    def _model(self, op: _Open) -> Candidate | None:
        """The model's mask for the current clicks (>= 4), made once per set of clicks."""
        if len(op.points) < 4:
            return None
        key = tuple(tuple(p) for p in op.points)
        seg = self.segmenter
        if (op.model is not None and op.model.points == key
                and op.model.engine == str(getattr(seg, "name", ""))):
            return op.model
        t0 = time.perf_counter()
        try:
            image = self.load(op.path)
            mask = np.asarray(seg.segment(image, np.asarray(op.points, dtype=np.float64)),
                              dtype=bool)
            error = None
        except ValueError as exc:
            mask, error = None, str(exc)
        except Exception as exc:  # a failing model must not cost the clicks
            mask, error = None, f"the segmenter {seg.name} failed ({type(exc).__name__}: {exc})."
        ms = (time.perf_counter() - t0) * 1000.0
        op.model = Candidate(key, mask, error, str(getattr(seg, "name", "")), ms)
        return op.model

    def progress_counts(self) -> dict[str, int]:
        """Images of the folder by status (``{"todo": n, "done": n, ...}``), for the page that
        says the queue is empty."""
        return dict(self.store.summary()["by_status"])

    def unreadable_images(self) -> list:
        """The photos marked unreadable that are still in the folder (ImageRecords, with their
        ``error``)."""
        return [r for r in self.store.images("unreadable") if not r.missing]

    # ---- editing an accepted object ----------------------------------------------------------

    def edit_object(self, obj) -> None:
        """Make one of :attr:`objects` (an ObjectRecord or its object id) the current object to
        correct it with strokes; each change is saved at once. SessionError while another
        object is being made (accept or clear it first) or when the object is gone."""
        op = self._require_editable()
        if op.editing is not None:
            self.stop_editing()
        if op.points or op.strokes:
            raise SessionError("Accept or clear the object you are making first, then edit "
                               "another one.")
        object_id = obj if isinstance(obj, str) else getattr(obj, "object_id", "")
        found = [o for o in self.objects if object_id and o.object_id == object_id]
        if not found:
            raise SessionError("That object is no longer on this image (deleted meanwhile?); "
                               "reload the page to see its objects.")
        record = found[0]
        op.editing = _Editing(record.object_id, np.packbits(self.mask(record).ravel()),
                              tuple(record.strokes))
        op.strokes, op.history, op.candidate = [], [], None

    def save_edit(self):
        """Save the object being edited: its mask file, then its strokes (the stored ones plus
        this session's), through ``store.edit_object`` (the claim is checked before anything is
        written). Returns the stored ObjectRecord. Raises ClaimError when the claim was lost
        (nothing written; the image turns read-only), WriteError when a write failed (the
        previous mask file is put back; the strokes stay here: call again to retry, which
        stores them once), SessionError when the object is gone."""
        from .store import ClaimError, StoreInputError, StoreWriteError

        op = self._require_editable()
        ed = op.editing
        if ed is None:
            raise SessionError("No object is being edited; press Edit beside an object first.")
        strokes = tuple(op.strokes)
        mask = self.candidate.mask
        target = object_mask_path(self.paths.destination, op.image_id, ed.object_id)
        written = []

        def write() -> None:
            save_object_mask(target, mask)
            written.append(True)

        try:
            stored = self.store.edit_object(op.image_id, self.annotator, ed.object_id,
                                            [*ed.before, *strokes], session=self.token,
                                            write=write)
        except ClaimError as exc:
            self._lost(exc)
            raise
        except StoreInputError as exc:
            raise SessionError(str(exc)) from exc
        except (OSError, StoreWriteError) as exc:
            if written:  # the file is new, the record is not: put the saved mask back
                previous = self._masks.get((op.image_id, ed.object_id))
                if previous is not None:
                    n = op.shape[0] * op.shape[1]
                    with contextlib.suppress(OSError):
                        save_object_mask(target, np.unpackbits(previous, count=n)
                                         .astype(bool).reshape(op.shape))
            if isinstance(exc, OSError):
                raise WriteError(_disk_message(exc, "The edit was not saved",
                                               "then press Save edit")) from exc
            raise WriteError(f"The edit was not saved: {exc} Press Save edit to try "
                             "again.") from exc
        self._masks[(op.image_id, ed.object_id)] = np.packbits(mask.ravel())
        ed.saved = strokes
        return stored

    @property
    def edit_saved(self) -> bool:
        """True unless the object being edited has strokes the store does not hold yet."""
        op = self._open
        return not (op and op.editing) or tuple(op.strokes) == op.editing.saved

    def stop_editing(self) -> None:
        """Go back from editing an accepted object to making a new one. SessionError when the
        last change is not saved yet (retry :meth:`save_edit`, or undo it)."""
        op = self._require_open()
        if op.editing is None:
            return
        if not self.edit_saved:
            raise SessionError("The last change to this object is not saved: press Save edit "
                               "to try again, or Undo it.")
        op.editing, op.strokes, op.history, op.candidate = None, [], [], None
        op.object_started = self.clock()

    def _refuse_clicks_while_editing(self, op: _Open) -> None:
        if op.editing is not None:
            raise SessionError("Clicks make a new object: press Done editing first (an "
                               "accepted object is corrected with Paint and Erase).")

    def overlaps(self) -> list[Overlap]:
        """How the candidate overlaps the accepted objects: one :class:`Overlap` per object it
        shares pixels with, in the objects' order; ``[]`` without a candidate mask."""
        cand = self.candidate
        if cand is None or cand.mask is None:
            return []
        objects = self.objects
        key = (cand.points, tuple(_object_key(o) for o in objects), self.masks_revision)
        if self._overlaps is not None and self._overlaps[0] == key:
            return list(self._overlaps[1])
        masks = [self.mask(o) for o in objects]
        area = max(1, int(np.count_nonzero(cand.mask)))
        found = []
        for obj, m, shared in zip(objects, masks, overlap_pixels(cand.mask, masks), strict=True):
            if shared:
                found.append(Overlap(obj, shared, shared / max(1, int(np.count_nonzero(m))),
                                     shared / area, bool(getattr(obj, "object_id", ""))))
        self._overlaps = (key, found)
        return list(found)

    # ---- actions -----------------------------------------------------------------------------

    def accept(self, label: str, cut_earlier: bool = False):
        """Store the candidate as an object with ``label``; returns the stored ObjectRecord.

        Its mask file is written first, then the store add (with a client-made object id kept
        until the add succeeds, so a retry after any failure stores it once). With
        ``cut_earlier`` the accepted objects it overlaps lose those pixels (objects without an
        object id are left as they are): in the add's transaction, after its claim check, their
        object files are rewritten and the pixels each lost are stored in its record
        (``ObjectRecord.cuts``) with the new object. If a file or the store fails, the files
        already rewritten are put back (the message names any that could not be) and nothing
        is stored; a retry makes the same cut once. Raises SessionError without a mask or with
        an empty one, WriteError when a mask or the store cannot be written, ClaimError when
        the claim was lost (the image turns read-only; nothing is stored and no earlier
        object's file is rewritten); the clicks are kept on every failure.
        """
        from .store import ClaimError, ObjectRecord, StoreWriteError

        op = self._require_editable()
        if op.editing is not None:
            raise SessionError("This object is already accepted and its changes are saved; "
                               "press Done editing.")
        cand = self.candidate
        if cand is None or cand.mask is None or 0 < len(op.points) < 4:
            raise SessionError("Click the object's four extreme points first (left-most, "
                               "right-most, top, bottom) and check the mask, or paint it.")
        if not cand.mask.any():
            raise SessionError(f"The mask is empty ({cand.engine} found no object there), so "
                               "nothing was saved. Move the clicks onto the object's edges, "
                               "paint the object, or Clear and click again.")
        if op.pending_id is None or op.pending_points != (cand.points, cand.strokes):
            op.pending_id, op.pending_points = uuid.uuid4().hex, (cand.points, cand.strokes)
            op.pending_cuts = None
        object_id = op.pending_id
        cutting = self._plan_cut(op, cand.mask) if cut_earlier else []
        target = object_mask_path(self.paths.destination, op.image_id, object_id)
        try:
            save_object_mask(target, cand.mask)
        except OSError as exc:
            raise WriteError(_disk_message(exc, "The object was not saved",
                                           "then press Accept again")) from exc
        now = self.clock()
        record = ObjectRecord(label=str(label), points=[list(p) for p in cand.points],
                              engine=cand.engine, annotator=self.annotator,
                              seconds=round(max(0.0, now - op.object_started), 3),
                              object_id=object_id, strokes=list(cand.strokes),
                              edited=bool(cand.strokes))
        written: list[_Cutting] = []

        def write() -> None:
            for c in cutting:
                save_object_mask(object_mask_path(self.paths.destination, op.image_id,
                                                  c.object_id), self._unpack(op, c.kept))
                written.append(c)

        try:
            stored = self.store.add_object(op.image_id, self.annotator, record,
                                           session=self.token,
                                           cuts={c.object_id: c.cut for c in cutting},
                                           write=write if cutting else None)
        except ClaimError as exc:
            self._lost(exc)
            raise
        except (OSError, StoreWriteError) as exc:
            if cutting:
                raise WriteError(self._cut_failed(op, written, exc)) from exc
            if not isinstance(exc, OSError):
                raise
            raise WriteError(_disk_message(exc, "The object was not saved",
                                           "then press Accept again")) from exc
        for c in cutting:
            self._masks[(op.image_id, c.object_id)] = c.kept
        if cutting:
            self.masks_revision += 1
        self._masks[(op.image_id, object_id)] = np.packbits(cand.mask.ravel())
        op.pending_id = op.pending_points = op.pending_cuts = None
        op.points, op.strokes, op.history, op.candidate = [], [], [], None
        op.object_started = now
        self._keep_clicks(op)
        return stored

    def _plan_cut(self, op: _Open, later: np.ndarray) -> list[_Cutting]:
        """What a cut by the candidate mask ``later`` (bool (H, W)) does to each cuttable object
        it overlaps. Planned once per pending object id: a retry makes the same cut (even of an
        object whose file a failed attempt could not put back), for the objects still there."""
        if op.pending_cuts is None:
            plan = []
            for overlap in self.overlaps():
                if overlap.can_cut:
                    before = self.mask(overlap.obj)
                    plan.append(_Cutting(overlap.obj.object_id, overlap.obj.index,
                                         np.packbits(before.ravel()),
                                         np.packbits(cut_mask(before, later).ravel()),
                                         Cut.of(before & later)))
            op.pending_cuts = plan
        there = {o.object_id for o in self.objects}
        return [c for c in op.pending_cuts if c.object_id in there]

    def _cut_failed(self, op: _Open, written: list[_Cutting], exc: Exception) -> str:
        """Put the object files a failed cut rewrote back as they were; the message for the
        failure (it names the objects whose file could not be put back)."""
        stuck = []
        for c in written:
            try:
                save_object_mask(object_mask_path(self.paths.destination, op.image_id,
                                                  c.object_id), self._unpack(op, c.before))
            except OSError:
                stuck.append(str(c.index))
        if isinstance(exc, OSError):
            why = f"could not write to disk ({exc.strerror or exc})"
        else:
            why = str(exc).rstrip(".")
        if not stuck:
            return (f"The object was not saved and nothing was cut: {why}. Nothing already "
                    "saved was lost; free some space or fix the folder's permissions, then "
                    "press Accept again.")
        return (f"The object was not saved: {why}. The mask file of object(s) "
                f"{', '.join(stuck)} already lost the new object's pixels and could not be "
                "put back; free some space or fix the folder's permissions, then press Accept "
                "again (with Cut) to finish the cut.")

    @staticmethod
    def _unpack(op: _Open, packed: np.ndarray) -> np.ndarray:
        n = op.shape[0] * op.shape[1]
        return np.unpackbits(packed, count=n).astype(bool).reshape(op.shape)

    def delete(self, obj) -> None:
        """Remove one of :attr:`objects` (an ObjectRecord or its object id) from the store; an
        object already gone is no error. ClaimError when the claim was lost."""
        from .store import ClaimError

        op = self._require_editable()
        target = obj if isinstance(obj, str) else (getattr(obj, "object_id", "") or obj.index)
        try:
            self.store.remove_object(op.image_id, self.annotator, target, session=self.token)
        except ClaimError as exc:
            self._lost(exc)
            raise
        except OSError as exc:
            raise WriteError(_disk_message(exc, "The object was not deleted",
                                           "then delete it again")) from exc
        if op.editing is not None and op.editing.object_id == target:
            op.editing, op.strokes, op.history, op.candidate = None, [], [], None
        if not isinstance(target, int):
            self._masks.pop((op.image_id, target), None)
            with contextlib.suppress(OSError):
                object_mask_path(self.paths.destination, op.image_id, target).unlink()
        else:  # index-addressed (objects of the first version): later ones move up
            self._masks = {k: v for k, v in self._masks.items() if k[0] != op.image_id}

    def done(self, allow_empty: bool = False) -> DoneResult:
        """Finish the open image: the mask file is built from the store's objects inside
        ``store.complete`` (after the claim check) and written atomically; the image closes.

        Raises EmptyImageError for an image without objects unless ``allow_empty``, WriteError
        when the mask file cannot be written (the image stays open and in progress), ClaimError
        when the claim was lost (nothing is written; the image turns read-only).
        """
        from .store import ClaimError

        op = self._require_editable()
        if not self.edit_saved:
            raise SessionError("The last change to the object you are editing is not saved: "
                               "press Save edit to try again, or Undo it, then Image done.")
        if not allow_empty and not self.objects:
            raise EmptyImageError(f"{op.image_id} has no object. Save it as done with an empty "
                                  "mask?")
        target = self._mask_file(op.image_id)
        written: list[int] = []

        def write(objects) -> None:
            labels = label_map([self.mask(o) for o in objects], op.shape)
            save_label_map(target, labels, [o.object_id for o in objects])
            written.append(len(objects))

        seconds = round(max(0.0, self.clock() - op.opened_at), 3)
        try:
            self.store.complete(op.image_id, self.annotator, seconds, session=self.token,
                                write=write)
        except ClaimError as exc:
            self._lost(exc)
            raise
        except OSError as exc:
            raise WriteError(_disk_message(exc, f"{op.image_id} is not done yet",
                                           "then press Image done again")) from exc
        with contextlib.suppress(OSError):
            draft_path(self.paths.destination, op.image_id).unlink()  # the first version's
        self._drop_clicks(op.image_id)
        n = written[0] if written else len(self.objects)
        self._close()
        return DoneResult(op.image_id, n, target)

    def skip(self, reason: str = "skipped on the annotate page") -> str:
        """Mark the open image skipped and close it; returns its id. ClaimError when the claim
        was lost."""
        from .store import ClaimError

        op = self._require_editable()
        try:
            self.store.skip(op.image_id, self.annotator, reason=reason, session=self.token)
        except ClaimError as exc:
            self._lost(exc)
            raise
        except OSError as exc:
            raise WriteError(_disk_message(exc, f"{op.image_id} was not skipped",
                                           "then press Skip again")) from exc
        self._drop_clicks(op.image_id)
        self._close()
        return op.image_id

    # ---- internals ---------------------------------------------------------------------------

    def _require_open(self) -> _Open:
        if self._open is None:
            raise SessionError("No image is open; open the next image first.")
        return self._open

    def _require_editable(self) -> _Open:
        op = self._require_open()
        if not op.status.editable:
            raise ReadOnlyError(f"{op.image_id} is read-only here: {op.status.reason}")
        return op

    def _mask_file(self, image_id: str) -> Path:
        """The image's mask file (its whole photo name kept when another photo of its folder
        shares the name stem, see :func:`dextr_core.masks.clashing_ids`)."""
        p = self.paths
        return mask_path(p.destination, image_id, p.mask_suffix, p.save_format,
                         clashing_ids(self.store.image_ids(), near=image_id))

    def _shape(self, image_id: str) -> tuple[int, int]:
        image = self.load(self.paths.source / image_id)
        return int(image.shape[0]), int(image.shape[1])

    def _check_photo(self, op: _Open) -> None:
        """Read the open photo again when its file changed on disk since it was opened (one
        ``stat`` when it did not). A file that cannot be read any more is marked unreadable in
        the store with the reason, which releases this session's claim (an image shown
        read-only is left as the store has it), the image is closed and
        :class:`PhotoUnreadableError` names the file and why. A readable new version replaces
        the old one (the clicks go if its size changed)."""
        stamp = _file_stamp(op.path)
        if stamp == op.file_stamp:
            return
        try:
            shape = self._shape(op.image_id)
        except ImageReadError as exc:
            if op.status.editable:
                self.store.mark_unreadable(op.image_id, str(exc))
                after = ("It is marked unreadable and no longer held by you (its objects are "
                         "kept); a lead sees it on the Progress page.")
            else:
                after = "It was closed."
            self._close()
            raise PhotoUnreadableError(f"The photo {op.image_id} changed on disk and can no "
                                       f"longer be read: {exc} {after}") from exc
        op.file_stamp, op.candidate = stamp, None
        self._masks = {}
        if shape != op.shape:
            op.shape, op.points = shape, []

    def _show(self, image_id: str, *, claimed: bool, reason: str | None = None,
              shape: tuple[int, int] | None = None) -> ImageStatus:
        if shape is None:
            shape = self._shape(image_id)
        record = self.store.get(image_id)
        now = self.clock()
        status = ImageStatus(image_id, record.status, record.annotator, claimed,
                             None if claimed else reason)
        self._masks = {k: v for k, v in self._masks.items() if k[0] == image_id}
        path = self.paths.source / image_id
        self._open = _Open(image_id, path, shape, status, now, now, now,
                           file_stamp=_file_stamp(path))
        if claimed:  # the clicks of an object this annotator was making before a refresh
            kept = load_clicks(clicks_path(self.paths.destination, image_id), self.annotator)
            height, width = shape
            self._open.points = [p for p in kept if 0 <= p[0] <= width - 1
                                 and 0 <= p[1] <= height - 1]
        return status

    def _step(self, step: int, own: bool = False) -> ImageStatus | None:
        self.passed_over, self._notes = self._notes, []
        ids = self.store.image_ids()  # sorted
        here = self.image_id
        i = bisect.bisect_left(ids, here) if here is not None else len(ids)
        if here is not None and (i >= len(ids) or ids[i] != here):
            i = i - 1 if step > 0 else i  # the open image is gone from the store
        j = i + step
        while 0 <= j < len(ids):
            record = self.store.get(ids[j])
            if (record is not None and not record.missing and record.status != "unreadable"
                    and (not own or record.annotator == self.annotator)):
                try:
                    return self._open_one(ids[j])
                except ImageReadError as exc:
                    self.passed_over.append(f"{ids[j]}: {exc}")
            j += step
        return None

    def _give_back(self, image_id: str) -> None:
        from .store import ClaimError

        with contextlib.suppress(ClaimError):
            self.store.release(image_id, self.annotator, session=self.token)

    def _leave(self) -> None:
        if self._open is not None and self._open.status.editable:
            self._drop_clicks(self._open.image_id)
            self._give_back(self._open.image_id)
        self._close()

    def _drop_clicks(self, image_id: str) -> None:
        with contextlib.suppress(OSError):
            save_clicks(clicks_path(self.paths.destination, image_id), self.annotator, [])

    def _close(self) -> None:
        self._open = None
        self._masks = {}

    def _lost(self, exc: Exception) -> None:
        """The store refused this session's claim: the image turns read-only with the reason."""
        op = self._open
        if op is None:
            return
        record = self.store.get(op.image_id)
        op.status = ImageStatus(op.image_id, record.status if record else "todo",
                                record.annotator if record else None, False, str(exc))

    def _checked_point(self, op: _Open, x, y) -> tuple[float, float]:
        try:
            fx, fy = float(x), float(y)
        except (TypeError, ValueError):
            raise PointError(f"A click must be two numbers (x, y), got ({x!r}, {y!r}).") from None
        height, width = op.shape
        if not (0 <= fx <= width - 1 and 0 <= fy <= height - 1):
            raise PointError(f"Click ({fx:g}, {fy:g}) is outside the image ({width} x {height} "
                             "px) and was ignored; click inside the image.")
        return fx, fy

    def _points_changed(self, op: _Open) -> None:
        """The clicks changed: the candidate is recomputed on demand (a pending Accept keeps its
        object id only for the very clicks it was made with, see :meth:`accept`)."""
        op.candidate = None
        if len(op.points) < 4:
            op.model = None  # as before strokes: fewer than 4 clicks forget the model's mask
        if not op.points and not op.strokes:
            op.object_started = self.clock()
        self._keep_clicks(op)

    def _keep_clicks(self, op: _Open) -> None:
        """Keep the current clicks on disk for a page refresh (best effort: a failure is said
        in :attr:`clicks_warning`, the clicks stay in this session)."""
        try:
            save_clicks(clicks_path(self.paths.destination, op.image_id), self.annotator,
                        op.points)
            self.clicks_warning = None
        except OSError as exc:
            self.clicks_warning = (f"The clicks could not be kept for a page refresh "
                                   f"({exc.strerror or exc}); they are kept until you leave "
                                   "this page.")

    def _find_mask(self, op: _Open, obj) -> np.ndarray:
        object_id = getattr(obj, "object_id", "")
        if op.mask_file is None:
            op.mask_file = self._mask_file(op.image_id)
        if object_id:
            found = load_object_mask(
                object_mask_path(self.paths.destination, op.image_id, object_id), op.shape)
            if found is not None and (op.status.editable or self._saved_with(op, obj, found)):
                return found
        for source in (draft_path(self.paths.destination, op.image_id), op.mask_file):
            labels = _label_file(source, op.shape)
            if labels is None:
                continue
            ids = label_map_object_ids(source)
            # a file that names its objects is read by object id (an edit may have moved them)
            index = (ids.index(object_id) + 1 if object_id in (ids or ()) else
                     int(obj.index) if ids is None or not object_id else 0)
            if 1 <= index <= len(labels) and labels[index - 1].any():
                return labels[index - 1]
        model = None
        if obj.points:
            try:
                model = np.asarray(self.segmenter.segment(
                    self.load(op.path), np.asarray(obj.points, dtype=np.float64)), dtype=bool)
            except Exception:  # a refusal or a failing model: the object shows its strokes
                model = None
        return rebuild_mask(model, list(getattr(obj, "strokes", None) or []),
                            list(getattr(obj, "cuts", None) or []), op.shape)


def _track(history: list, kind: str, before: int, after: int) -> None:
    """Keep the undo history in step with a list of ``kind`` that went from ``before`` to
    ``after`` items (added at its end, or its last ones removed, as a canvas does)."""
    if after > before:
        history.extend([kind] * (after - before))
        return
    for _ in range(before - after):
        for i in range(len(history) - 1, -1, -1):
            if history[i] == kind:
                del history[i]
                break


def _file_stamp(path: Path) -> tuple | None:
    """(mtime ns, size, inode) of a file, None when it cannot be stat'ed (e.g. gone)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _object_key(obj) -> str:
    return getattr(obj, "object_id", "") or f"#{obj.index}"


def _label_file(path: Path, shape: tuple[int, int]) -> list[np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        labels = load_label_map(path)
    except MaskFileError:
        return None
    return split_label_map(labels) if labels.shape == tuple(shape) else None


def _finished_reason(record) -> str | None:
    if record.status == "done":
        who = f" by {record.annotator}" if record.annotator else ""
        return f"{record.id} is done{who}. Press Edit to correct it."
    if record.status == "skipped":
        who = f" by {record.annotator}" if record.annotator else ""
        return f"{record.id} was skipped{who}. Press Edit to annotate it."
    return None


def _disk_message(exc: OSError, what: str, then: str) -> str:
    return (f"{what}: could not write to disk ({exc.strerror or exc}). Nothing already saved "
            f"was lost; free some space or fix the folder's permissions, {then}.")
