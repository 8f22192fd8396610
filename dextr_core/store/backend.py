"""The storage a progress store's rules run over: the :class:`Backend` protocol.

:mod:`dextr_core.store.rules` holds the claim rules, checks and messages once; a backend only
keeps documents and answers questions about them. Two backends implement it:
:class:`~dextr_core.store.file_backend.FileBackend` (TinyDB over a JSON snapshot and an fsync'd
journal, with in-memory indexes) and :class:`~dextr_core.store.postgres.PostgresBackend` (SQL).

Documents are the sparse dicts of :mod:`dextr_core.store.records` (an image document holds its
objects as a list). Every method but :meth:`Backend.transaction` and :meth:`Backend.close` is
called inside a transaction, and a document a method returns may be the backend's own: callers
read it, and change it only through :meth:`Backend.update`.
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .records import Event

__all__ = ["Backend", "Figures"]


@dataclass
class Figures:
    """The counts behind :meth:`~dextr_core.store.rules.Store.summary` (missing images excluded
    everywhere but :attr:`missing`); the rules turn them into the summary's shape."""

    by_status: dict[str, int]
    missing: int
    objects: int
    seconds: float
    done: dict[str, int] = field(default_factory=dict)  #: done images by annotator
    skipped: dict[str, int] = field(default_factory=dict)
    objects_by: dict[str, int] = field(default_factory=dict)  #: objects by their annotator
    seconds_by: dict[str, float] = field(default_factory=dict)  #: seconds of done images
    #: seconds per object of each annotator's done images with objects
    seconds_per_object: dict[str, list[float]] = field(default_factory=dict)
    last_activity: dict[str, float] = field(default_factory=dict)  #: latest event time by name
    claims: list[dict] = field(default_factory=list)  #: in-progress image documents, by id
    last_event: float | None = None


class Backend(Protocol):
    """What the rules need from a store's storage (see the module docstring)."""

    #: where the store is, for messages (a file path, or a URL without its password)
    path: Path | str

    def transaction(self) -> AbstractContextManager[object]:
        """One transaction (nested calls join it): all of it is stored, or none of it."""

    def close(self) -> None:
        """Release files and connections; the backend cannot be used afterwards."""

    def count(self) -> int:
        """Number of images (missing ones included)."""

    # ---- one image ------------------------------------------------------------------------

    def image(self, image_id: str) -> dict | None:
        """The image's document, to be changed in this transaction (a database locks its row)."""

    def peek(self, image_id: str) -> dict | None:
        """The image's document, only to be read."""

    def update(self, image_id: str, fields: dict) -> None:
        """Set ``fields`` of a known image (a field at its default value is dropped)."""

    def insert_images(self, docs: list[dict]) -> None:
        """Add new image documents (their ids are not in the store)."""

    def log(self, time: float, action: str, image_id: str | None, annotator: str | None,
            detail: dict) -> None:
        """Append an event to the activity log."""

    # ---- claims ---------------------------------------------------------------------------

    def claims(self, annotator: str | None = None) -> list[dict]:
        """The in-progress images (of ``annotator``; missing ones excluded), by id, to change."""

    def free_images(self, lapsed_before: float) -> tuple[list[dict], dict | None]:
        """Candidates to hand out: the in-progress images claimed at or before
        ``lapsed_before`` (a database skips rows others lock) by id, and the todo image of the
        smallest id (None if none); missing images excluded. The rules check each again."""

    # ---- reading --------------------------------------------------------------------------

    def images(self, status: str | None = None, with_objects: bool = False) -> list[dict]:
        """Image documents by id (all, of ``status``, or only those with objects)."""

    def image_ids(self, status: str | None = None) -> list[str]:
        """Image ids, sorted (all, or of ``status``)."""

    def review_facts(self) -> list[dict]:
        """``{id, status, missing, review, completed_at}`` of every done image and of every image
        with a review (the facts :func:`~dextr_core.store.records.review_state` reads)."""

    def events(self, since: float | None = None, limit: int | None = None) -> list[Event]:
        """Events after ``since``, the last ``limit`` of them, oldest first."""

    def figures(self) -> Figures:
        """The counts for the leads' summary, from one consistent state."""

    # ---- maintenance ----------------------------------------------------------------------

    def lock_for_maintenance(self) -> None:
        """Keep other servers' maintenance out until this transaction ends."""

    def all_ids(self) -> Collection[str]:
        """Every image id, including those inserted in this transaction (for membership)."""

    def missing_ids(self) -> Collection[str]:
        """The ids of images flagged missing."""

    def all_images(self) -> list[dict]:
        """Every image document by id, to be changed in this transaction."""

    def meta(self) -> dict:
        """The store's facts (creation, reset, legacy import)."""

    def update_meta(self, fields: dict) -> None:
        """Merge ``fields`` into the store's facts."""

    def reset(self, now: float) -> Path | str:
        """Keep a backup of everything, empty the store (its facts: ``reset_at``, the backup);
        return the backup's name. Raises a store error saying what is on disk if it fails."""

