"""The progress store package: one store is the single truth of a team's annotation progress.

* :mod:`.records` - ImageRecord, ObjectRecord, Event, SyncReport, STATUSES, the store's errors.
* :mod:`.rules` - :class:`Store`: the claim rules, checks and messages (claims, objects,
  finishing, reading, summary), written once over a backend.
* :mod:`.backend` - the :class:`~.backend.Backend` protocol the rules and maintenance run over.
* :mod:`.file_backend` - :class:`~.file_backend.FileBackend` (TinyDB, indexes, the journal) and
  :class:`ProgressStore`, the store in a file.
* :mod:`.postgres` - :class:`~.postgres.PostgresBackend` (SQL) and ``PostgresStore``, the store
  in a PostgreSQL database (imported when one is opened).
* :mod:`.opening` - :func:`open_store`, the entry point that picks the backend from the location
  (:func:`config_options`: its keywords for a config).
* :mod:`.maintenance` - folder scan/sync, the DEXTR-AnnoTool import, reset, reconcile.
* :mod:`.imports` - objects imported from other annotations (``add_imported``).
* :mod:`.legacy` - DEXTR-AnnoTool's progress file (``.anno_prog``): reading it, its paths.
* :mod:`.journal` - the storage engine: an in-memory TinyDB over a JSON snapshot plus an fsync'd
  journal, with its file format and failure rules in the module docstring.

``from dextr_core.store import ProgressStore, ObjectRecord, ClaimError, ...`` imports the public
names from here.
"""

from .file_backend import ProgressStore
from .opening import config_options, open_store
from .records import (
    LEGACY_ANNOTATOR,
    LEGACY_PROGRESS_NAME,
    STATUSES,
    ClaimError,
    Event,
    ImageRecord,
    ObjectRecord,
    StoreBusyError,
    StoreCorruptError,
    StoreInputError,
    StoreWriteError,
    SyncReport,
    _decode_points,
    _encode_points,
    review_state,
)
from .rules import Store

__all__ = [
    "LEGACY_ANNOTATOR",
    "LEGACY_PROGRESS_NAME",
    "STATUSES",
    "ClaimError",
    "Event",
    "ImageRecord",
    "ObjectRecord",
    "ProgressStore",
    "Store",
    "StoreBusyError",
    "StoreCorruptError",
    "StoreInputError",
    "StoreWriteError",
    "SyncReport",
    "_decode_points",
    "_encode_points",
    "config_options",
    "open_store",
    "review_state",
]
