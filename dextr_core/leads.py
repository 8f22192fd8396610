"""A lead's actions on the team's work, as a plain object (no Streamlit): the lead side of what
:class:`~dextr_core.session.AnnotationSession` is for an annotator.

:class:`LeadActions` reopens images, reviews done ones (approve, or send back with a note),
resets the progress, scans the source folder and writes exports. Its rules are the session's:

- **Role checked at the call**: every change asks ``lead()`` (the caller's lead name, or None
  when the caller is not a lead right now) when it runs, not when the page was drawn; a refusal
  changes nothing and says how to become a lead.
- **Claims respected**: an image someone has open is not reviewed under their hands; a review
  names the completion it judged (``completed_at``), so a photo finished again meanwhile is
  refused, not approved unseen.
- **Truthful messages**: every action returns an :class:`Outcome` whose sentence says what took
  effect and where the image is now; a failure of the store is an ``error`` outcome (the
  store's transaction changed nothing), never an exception the page must know about.
- **Nothing lost**: reopen and send back keep the objects; a reset keeps the old progress as a
  backup; an export never replaces one others may be using unless a lead asks.

Messages are plain text (the page escapes them for Markdown). Reading (the review queue, the
counts, an image's objects) needs no role.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DextrError
from .export import ExportError, ExportResult, run_export
from .store import LEGACY_ANNOTATOR

#: The page's export choices -> run_export's ``fmt`` and options (others are run_export's fmt).
EXPORT_CALLS = {"coco-polygon": ("coco", {"segmentation": "polygon"})}


def _needs_lead(what: str) -> str:
    return f"Only a lead can {what}: sign in with the lead role."


@dataclass(frozen=True)
class Outcome:
    """What one action did. ``level``: "success", "warning" (part took effect: the message says
    which) or "error" (nothing changed); ``message``: one plain-text sentence or more;
    ``image_id``; ``status`` / ``holder``: the image's status and who holds it afterwards (None
    when unknown or nobody); ``backup``: where a reset put the old progress; ``lines``: what a
    scan found."""

    level: str
    message: str
    image_id: str | None = None
    status: str | None = None
    holder: str | None = None
    backup: Path | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the action took full effect."""
        return self.level == "success"


class LeadActions:
    """A lead's actions over one opened store.

    ``handle``: the store and what its last scan found (anything with ``store``, ``lock``,
    ``sync_report``, ``reconciled``, ``reset_pending``, like ``ui.resources.StoreHandle``);
    ``cfg``: the :class:`~dextr_core.config.AnnoConfig` (folders, mask naming, config path);
    ``lead``: returns the caller's lead name now, None when the caller is not a lead;
    ``refusal``: what -> the sentence a non-lead gets (the page says how to sign in);
    ``clock``: epoch seconds (export names).
    """

    def __init__(self, handle, cfg, *, lead: Callable[[], str | None],
                 refusal: Callable[[str], str] = _needs_lead,
                 clock: Callable[[], float] = time.time):
        self.handle = handle
        self.cfg = cfg
        self.lead = lead
        self.refusal = refusal
        self.clock = clock

    @property
    def store(self):
        """The progress store (for the page's tables in ``ui``; the actions go through here)."""
        return self.handle.store

    @property
    def is_lead(self) -> bool:
        """Whether the caller is a lead right now."""
        return self.lead() is not None

    # ---- reading (anyone) -----------------------------------------------------------------------

    def review_queue(self, limit: int | None = None) -> list:
        """Done images waiting for review, oldest completion first (ImageRecords)."""
        return self.store.review_queue(limit)

    def review_counts(self) -> dict[str, int]:
        """``{"approved", "sent_back", "waiting"}`` image counts."""
        return self.store.review_counts()

    def objects(self, image_id: str) -> list:
        """The image's objects as the store holds them (ObjectRecords)."""
        return self.store.objects(image_id)

    def image(self, image_id: str):
        """The image's record (None when the store does not know it)."""
        return self.store.get(image_id)

    def review_next(self, passed: int = 0) -> tuple[Any, int]:
        """The photo to review after the lead passed over ``passed`` (Later) waiting ones: the
        ``passed + 1``-th oldest, or the oldest again once fewer wait (the count then starts over
        at 0). Returns (ImageRecord or None when nothing waits, the count that applies)."""
        queue = self.review_queue(limit=passed + 1)
        if not queue:
            return None, 0
        passed = passed if passed < len(queue) else 0
        return queue[passed], passed

    def last_scan(self) -> tuple[list[str], set[str]]:
        """What the last scan of the source folder found, in words (the sync report's lines,
        DEXTR-AnnoTool's import among them, then the mask files' repairs), and which of those
        lines are problems to fix."""
        report = self.handle.sync_report
        lines = list(getattr(report, "lines", list)()) + list(self.handle.reconciled)
        return lines, set(getattr(report, "messages", None) or ())

    # ---- one image ------------------------------------------------------------------------------

    def reopen(self, image_id: str) -> Outcome:
        """Back to the queue for anyone (done, skipped or unreadable; objects kept). An image
        being corrected stays with its annotator but no longer falls back to done."""
        by = self.lead()
        if by is None:
            return Outcome("error", self.refusal("reopen images"), image_id)
        try:
            before = self.store.get(image_id)
            self.store.reopen(image_id, by=by)
        except (DextrError, OSError) as exc:
            return self._failed(f"Could not reopen {image_id}: {exc}", image_id)
        if before is not None and before.status == "todo":
            return Outcome("warning", f"{image_id} is already in the queue for anyone; nothing "
                                      "was changed.", image_id, "todo")
        if before is not None and before.status == "in_progress":
            return Outcome("warning", f"{image_id} is open by {before.annotator}: it stays with "
                                      "them (if they are correcting it, it no longer goes back "
                                      "to done when they leave it).", image_id, "in_progress",
                           before.annotator)
        return self._after(image_id, f"{image_id} reopened.")

    def approve(self, image_id: str, *, completed_at: float | None = None) -> Outcome:
        """Approve a done image as the lead saw it (``completed_at`` of that version)."""
        by = self.lead()
        if by is None:
            return Outcome("error", self.refusal("approve images"), image_id)
        try:
            record = self.store.approve(image_id, by, completed_at=completed_at)
        except (DextrError, OSError) as exc:
            return self._failed(f"{image_id} was not approved: {exc}", image_id)
        who = f" ({record.annotator}'s work)" if record.annotator else ""
        return Outcome("success", f"{image_id} approved{who}.", image_id, record.status)

    def send_back(self, image_id: str, note: str = "", *,
                  completed_at: float | None = None) -> Outcome:
        """Send a done or skipped image back with ``note``: it is todo again (objects kept),
        offered first to whoever finished it (they see the note when they open it)."""
        by = self.lead()
        if by is None:
            return Outcome("error", self.refusal("send images back"), image_id)
        try:
            before = self.store.get(image_id)
            if before is None:
                return Outcome("error", f"There is no image {image_id} in the progress store.",
                               image_id)
            to = before.annotator if before.annotator != LEGACY_ANNOTATOR else None
            self.store.send_back(image_id, by, note, completed_at=completed_at, to=to)
        except (DextrError, OSError) as exc:
            return self._failed(f"{image_id} was not sent back: {exc}", image_id)
        said = f" with the note \u201c{note.strip()}\u201d" if note.strip() else ""
        return self._after(image_id, f"{image_id} sent back{said}.")

    def _after(self, image_id: str, done: str) -> Outcome:
        """A success outcome saying where the image is now (read again from the store)."""
        try:
            record = self.store.get(image_id)
        except (DextrError, OSError):
            record = None
        status = getattr(record, "status", None)
        holder = getattr(record, "annotator", None) if status == "in_progress" else None
        if status == "todo":
            where = " It is back in the queue for anyone."
        elif holder:
            where = f" It is the first image {holder} gets (theirs until they leave it idle)."
        else:
            where = ""
        return Outcome("success", done + where, image_id, status, holder)

    def _failed(self, message: str, image_id: str) -> Outcome:
        try:
            record = self.store.get(image_id)
        except (DextrError, OSError):
            record = None
        return Outcome("error", message, image_id, getattr(record, "status", None))

    # ---- the whole store ------------------------------------------------------------------------

    def rescan(self) -> Outcome:
        """Scan the source folder into the store (new photos join the queue) and reconcile the
        mask files; the outcome's ``lines`` say what changed."""
        if self.lead() is None:
            return Outcome("error", self.refusal("scan the source folder"))
        with self.handle.lock:
            try:
                self._scan()
            except Exception as exc:  # StoreWriteError, an unreadable folder, ...
                return Outcome("error", f"The scan failed, the queue is as it was: {exc}")
        lines, _ = self.last_scan()
        return Outcome("success", " ".join(["Source folder scanned.", *lines]), lines=lines)

    def reset(self, *, only_if_pending: bool = False) -> Outcome:
        """Start the progress over: the store keeps the old progress as a backup, then the source
        folder is scanned again. A reset the config asked for (``reset_pending``) is then done;
        with ``only_if_pending`` (the answer to that question) nothing happens when someone
        answered it meanwhile."""
        if self.lead() is None:
            return Outcome("error", self.refusal("reset progress"))
        with self.handle.lock:
            if only_if_pending and not self.handle.reset_pending:
                return Outcome("warning", "Someone answered the config's reset meanwhile; "
                                          "nothing was reset now.")
            try:
                backup = Path(self.store.reset())
            except Exception as exc:  # StoreWriteError, ...: the store promises nothing changed
                return Outcome("error", f"Reset failed, progress unchanged: {exc}")
            self.handle.reset_pending = False
            try:
                self._scan()
            except Exception as exc:  # the reset stands; the scan can be run again
                return Outcome(
                    "warning", f"Progress reset; the old progress is backed up in {backup}. The "
                    f"source folder could not be scanned, so the queue is empty: {exc} Fix "
                    "that, then press Scan the source folder.", backup=backup)
        return Outcome("success", f"Progress reset. The old progress is backed up in {backup}.",
                       backup=backup)

    def keep_progress(self) -> Outcome:
        """Answer a reset the config asks for (``admin.reset_progress: true``) with no."""
        if self.lead() is None:
            return Outcome("error", self.refusal("keep or reset the progress"))
        with self.handle.lock:
            self.handle.reset_pending = False
        return Outcome("success", "Progress kept. Set admin.reset_progress back to false in "
                                  "the config.")

    def _scan(self) -> None:
        cfg, store = self.cfg, self.store
        self.handle.sync_report = store.sync()
        self.handle.reconciled = list(
            store.reconcile(cfg.destination, cfg.mask_suffix, cfg.save_format) or [])

    # ---- exports (anyone; replacing an existing one: a lead) ------------------------------------

    def export(self, choice: str, status: str,
               progress: Callable[[int, int], Any] | None = None) -> ExportResult:
        """Export ``status`` images in the page's format ``choice`` (see EXPORT_CALLS) as a zip
        at :func:`export_target`; the role is checked now. ExportError, the store's errors and
        OSError (a full disk) propagate: nothing is left half-written (export.py)."""
        lead = self.is_lead
        target = export_target(self.cfg, choice, status, lead, self.clock())
        fmt, options = EXPORT_CALLS.get(choice, (choice, {}))
        return run_export(self.cfg, self.store, fmt, target, status=status, as_zip=True,
                          overwrite=lead, progress=progress, **options)

    @staticmethod
    def download(result: ExportResult) -> tuple[str, Callable[[], bytes]] | None:
        """(file name, a reader of its bytes) of an export's zip; None when it is gone."""
        path = Path(result.path)
        return (path.name, path.read_bytes) if path.is_file() else None


def export_folder(cfg) -> Path:
    """Where exports are written: ``exports/`` next to the config file, unless that lies in the
    source or destination folder or in the progress file's folder when that is not the config's
    own folder (export.py refuses targets there; then the system temp folder is used)."""
    folder = Path(cfg.path).parent / "exports"
    real = Path(os.path.realpath(folder))
    managed = [Path(cfg.source), Path(cfg.destination)]
    progress_folder = Path(cfg.progress_file).parent
    if os.path.realpath(progress_folder) != os.path.realpath(Path(cfg.path).parent):
        managed.append(progress_folder)
    for path in managed:
        inside = Path(os.path.realpath(path))
        if real == inside or inside in real.parents:
            return Path(tempfile.gettempdir()) / "dextr-exports"
    return folder


def export_target(cfg, fmt: str, status: str, lead: bool, now: float | None = None) -> Path:
    """The zip an export writes: ``<config stem>-<format>-<status>.zip`` in :func:`export_folder`.

    Only a lead replaces an existing one; anyone else's export goes next to it with the time
    (``now``, epoch s, default the clock; local time) in its name, so nobody but a lead
    overwrites an export others may be using. Raises ExportError when 999 such names are taken.
    """
    target = export_folder(cfg) / f"{Path(cfg.path).stem}-{fmt}-{status}.zip"
    if lead or not target.exists():
        return target
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    for n in range(1, 1000):
        candidate = target.with_name(f"{target.stem}-{stamp}{f'-{n}' if n > 1 else ''}.zip")
        if not candidate.exists():
            return candidate
    raise ExportError(f"Too many exports named {target.stem}-{stamp}* in {target.parent}")


def work_summary(record, objects: list) -> str:
    """One line on the work in an image: its ``objects`` (ObjectRecords) by label, most first,
    their clicks, and the seconds the photo was open (``record.seconds``), e.g. "2 car, 1 person;
    12 clicks; 40 s open" (plain text: the page escapes it)."""
    labels = Counter(str(o.label) for o in objects)
    clicks = sum(len(o.points or ()) for o in objects)
    seconds = float(getattr(record, "seconds", 0.0) or 0.0)
    shown = ", ".join(f"{n} {label}" for label, n in labels.most_common()) or "no objects"
    return f"{shown}; {clicks} clicks; {seconds:.0f} s open"
