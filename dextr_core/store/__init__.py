"""The progress store package: one store is the single truth of a team's annotation progress.

* :mod:`.records` - ImageRecord, ObjectRecord, Event, SyncReport, STATUSES, the store's errors.
* :mod:`.progress_store` - :class:`ProgressStore` (claims, objects, finishing, reading, summary)
  and :func:`open_store`, the entry point that picks the backend from the location
  (:func:`config_options`: its keywords for a config).
* :mod:`.maintenance` - folder scan/sync, the DEXTR-AnnoTool import, reset, reconcile.
* :mod:`.legacy` - DEXTR-AnnoTool's progress file (``.anno_prog``): reading it, its paths.
* :mod:`.journal` - the storage engine: an in-memory TinyDB over a JSON snapshot plus an fsync'd
  journal, with its file format and failure rules in the module docstring.

``from dextr_core.store import ProgressStore, ObjectRecord, ClaimError, ...`` imports the public
names from here.
"""

from .journal import StoreBusyError, StoreCorruptError, StoreWriteError
from .progress_store import ProgressStore, config_options, open_store
from .records import (
    LEGACY_ANNOTATOR,
    LEGACY_PROGRESS_NAME,
    STATUSES,
    ClaimError,
    Event,
    ImageRecord,
    ObjectRecord,
    StoreInputError,
    SyncReport,
    _decode_points,
    _encode_points,
    review_state,
)

__all__ = [
    "LEGACY_ANNOTATOR",
    "LEGACY_PROGRESS_NAME",
    "STATUSES",
    "ClaimError",
    "Event",
    "ImageRecord",
    "ObjectRecord",
    "ProgressStore",
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
