"""TinyDB storage for the progress store: tables in memory, a JSON snapshot plus an fsync'd journal.

TinyDB's own ``JSONStorage`` rereads and rewrites the whole file on every call, which takes a
third of a second per update at 100,000 images. :class:`JournaledStorage` keeps every table in
memory and persists it as two files next to each other.

File format
-----------
``<store>``
    the snapshot: one JSON object ``{"format": "dextr-progress-store", "version": 1, "store":
    <store id, uuid hex>, "generation": <int>, "covers": [<journal generation>, <byte offset>] or
    null, "saved_at": <epoch s>, "tables": {table: {doc_id: document}}}``, written atomically
    (:func:`dextr_core.fileio.atomic_write`: temp file, fsync, rename, fsync of the folder).
    ``covers`` says which journal bytes the snapshot already holds: every line of the journal of
    that generation before that byte offset (null for a brand-new store). Snapshots written before
    ``covers`` existed lack the key.
``<store>.journal``
    an append-only log. Its first line is a header ``{"store", "generation", "after"}`` (``after``
    = the ``covers`` of the snapshot written with it, null for a new store); every acknowledged
    write adds one line ``{"c": [[table, doc_id, document or null], ...]}`` holding the full new
    state of each document it touched (null = removed), then fsyncs. Replaying a line twice gives
    the same state, so a crash between two steps of a compaction loses nothing.
``<store>.lock``
    the inter-process lock (:class:`filelock.FileLock`).

Opening (every combination of the two files)
--------------------------------------------
* neither file: a new, empty store (both files written).
* snapshot and journal of the same store id and generation: snapshot + every journal line.
* journal one generation behind, at the generation and not shorter than the snapshot's
  ``covers``: a compaction stopped (crash, or a failed journal write) between writing the
  snapshot and the new journal. Snapshot + the journal lines after the covered offset; the
  journal is kept and appended to until the next compaction succeeds.
* snapshot without a journal: the snapshot holds everything (a crash right after a store was
  created or reset); a fresh journal is written.
* an old snapshot without ``covers`` and a journal exactly one generation behind: the snapshot
  holds the whole journal (how the first version compacted); a fresh journal is written.
* anything else raises :class:`StoreCorruptError` naming both files and touches neither: a journal
  without its snapshot, a journal header that cannot be read or names another store id, a journal
  ahead of the snapshot or behind it in any other way, a journal line that is not a journal entry
  (``{"c": 5}``) followed by more lines, a document that is not a JSON object, and whatever the
  hooks refuse (the progress store refuses an image without ``id``/``status``): ``on_reload`` for
  the snapshot's documents, ``validate`` for each document of a journal line. Only
  a torn last line (text after the last newline, or an unparsable final line followed by nothing:
  a write that never returned) is cut off.

Writing (what is on disk when a step fails)
-------------------------------------------
Every read or write runs inside :meth:`JournaledStorage.transaction`, which takes a thread lock and
the file lock, first applies what another process wrote since this one last looked (tracked by the
journal's and the snapshot's inodes, the generation and the byte offset read so far), and on the
way out commits every change of the transaction:

1. normally one journal line (``os.write`` + ``os.fsync``). If that fails, the line is cut off
   again, memory is re-read from disk (memory == disk: nothing half-applied) and
   :class:`StoreWriteError` is raised: the call changed nothing.
2. a transaction that changed many documents (or replaced whole tables) writes a new snapshot
   instead; the same holds if that write fails before its rename.
3. once the line is fsynced (or the snapshot renamed) the call has persisted and does not raise.
   When the journal passes ``compact_bytes`` a compaction follows (new snapshot with ``covers``,
   then a new journal of the next generation); if it fails, a warning is logged, the journal is
   kept (see "Opening") and the compaction is tried again after the journal has grown by another
   eighth of ``compact_bytes``.
4. a transaction whose block raises commits nothing: its changes are dropped from memory (re-read
   from disk), so a call that raised changed nothing.

:class:`JournaledTable` is the TinyDB table class that goes with it: its ``_update_table`` works on
the in-memory table in place and reports exactly the documents that changed, instead of copying the
whole table on every write. Documents handed to TinyDB's update callables must have their nested
values replaced, not mutated in place (the change detection compares shallow copies).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Table

from ..fileio import atomic_write
from .records import StoreBusyError, StoreCorruptError, StoreWriteError

log = logging.getLogger(__name__)

#: Value of the snapshot's "format" key; anything else is not a progress store.
SNAPSHOT_FORMAT = "dextr-progress-store"
SNAPSHOT_VERSION = 1
#: Journal size (bytes) past which the next write compacts it into the snapshot.
DEFAULT_COMPACT_BYTES = 16 * 1024 * 1024
#: A transaction changing more documents than this rewrites the snapshot instead of journaling.
BULK_CHANGES = 2000

Tables = dict[str, dict[str, dict]]
#: ``listener(table, doc_id, old_document_or_None, new_document_or_None)``
ChangeListener = Callable[[str, str, dict | None, dict | None], None]
#: ``validate(table, doc_id, document) -> None or the reason the document is malformed``
Validator = Callable[[str, str, dict], str | None]
#: ``(table, doc_id, reason)``: a malformed document and why (what ``on_reload`` may return)
Problem = tuple[str, str, str]
#: ``on_reload(tables) -> None or the first malformed document``
Reloader = Callable[[Tables], Problem | None]


#: Seconds between two tries to take the store's file lock while another process holds it.
LOCK_POLL_S = 0.002


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while millions of small objects are created.

    Loading a large store builds them all at once and would trigger many useless collections
    (they hold no cycles); pausing them cuts the opening time by about a third. Encoding a
    snapshot makes a short-lived ``(key, value)`` tuple per document key (the C encoder's
    ``items()``), which also set off collections: a quarter to a third of a compaction.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _ino(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _record_problem(table: str, doc_id: str, reason: str) -> str:
    return f"record {doc_id} of table {table!r} {reason}"


_ABSENT = object()


class JournaledStorage(Storage):
    """TinyDB :class:`~tinydb.storages.Storage` keeping tables in memory, durable via a journal.

    ``path`` is the snapshot file (created, with its folder, when neither it nor its journal
    exists). ``listener`` is called for every document change, local or read back from another
    process's journal lines, with the old and new document (``None`` for absent);
    ``on_reload(tables)`` is called with the whole content whenever it is replaced: with the
    snapshot's tables as soon as they are read from disk (before any journal line is applied,
    whose changes then go to ``listener``, and before anything is written), and after
    :meth:`write` and :meth:`start_new_store`. For a snapshot it also checks every document (one
    pass over them, e.g. while building indexes) and returns ``(table, doc_id, reason)`` for a
    malformed one, which refuses the store; its result is ignored for the process's own tables.
    ``validate(table, doc_id, document)`` returns why a document of a journal line is malformed
    (or None); it also checks the snapshot's documents when there is no ``on_reload``. Raises
    :class:`StoreCorruptError` when the files cannot be understood (see the module docstring for
    every case) and :class:`StoreWriteError` when a new store's files cannot be written.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        listener: ChangeListener | None = None,
        on_reload: Reloader | None = None,
        validate: Validator | None = None,
        compact_bytes: int = DEFAULT_COMPACT_BYTES,
        lock_timeout_s: float = 60.0,
    ):
        self.path = Path(path)
        self.journal_path = self.path.with_name(self.path.name + ".journal")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.listener = listener
        self.on_reload = on_reload
        self.validate = validate
        self.compact_bytes = int(compact_bytes)
        self._compact_at = self.compact_bytes
        self._tables: Tables = {}
        self._thread_lock = threading.RLock()
        self._file_lock = FileLock(str(self.lock_path), timeout=lock_timeout_s, thread_local=False)
        self._depth = 0
        self._pending: dict[tuple[str, str], dict | None] = {}
        self._rewrite_all = False
        self._stale = False
        self._store_id = ""
        self._generation = 0
        self._journal_fd: int | None = None
        self._journal_ino: int | None = None
        self._snapshot_ino: int | None = None
        self._offset = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._thread_lock:
            self._acquire_file_lock()
            try:
                self._load()
            finally:
                self._file_lock.release()

    # ---- TinyDB Storage interface -------------------------------------------------------------

    def read(self) -> Tables:
        """The live in-memory tables ``{table: {doc_id (str): document}}``; do not mutate them."""
        return self._tables

    def write(self, data: Tables) -> None:
        """Replace every table (TinyDB's drop_table(s)); saved as a new snapshot at commit."""
        with self.transaction():
            self._tables = data
            self._rewrite_all = True
            if self.on_reload is not None:
                self.on_reload(self._tables)

    def close(self) -> None:
        """Close the journal file handle; the storage cannot be used afterwards."""
        with self._thread_lock:
            if self._journal_fd is not None:
                os.close(self._journal_fd)
                self._journal_fd = None

    # ---- transactions -------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the thread and file locks; catch up with other processes; commit on the way out.

        Re-entrant: nested transactions commit with the outermost one. Every change made inside is
        on disk (fsync'd) when the outermost ``with`` block returns normally. If the block raises,
        nothing is committed: its changes are dropped and memory is re-read from disk. If the
        commit fails, :class:`StoreWriteError` is raised and memory is re-read from disk too.
        """
        with self.locked():
            outermost = self._depth == 1
            if outermost:
                try:
                    if self._stale:
                        self._load()
                    else:
                        self._catch_up()
                except BaseException:
                    self._stale = True  # memory may hold part of what was read: reload next time
                    raise
            try:
                yield
            except BaseException:
                if outermost and (self._pending or self._rewrite_all):
                    self._rollback()
                raise
            if outermost:
                self._commit()

    def _acquire_file_lock(self) -> None:
        try:
            # Poll often: a busy process re-takes the lock within microseconds of releasing it,
            # and filelock's default 50 ms poll could starve a second server process.
            self._file_lock.acquire(poll_interval=LOCK_POLL_S)
        except Timeout:
            raise StoreBusyError(
                f"The progress store {self.path} stayed locked by another process for more "
                f"than {self._file_lock.timeout:g} s. Try again; if it keeps happening, check for "
                "a hung server process using the same progress file."
            ) from None

    def record(self, table: str, doc_id: str, old: dict | None, new: dict | None) -> None:
        """Note that ``table[doc_id]`` went from ``old`` to ``new`` (inside a transaction only)."""
        if self._depth == 0:
            raise RuntimeError("JournaledStorage.record() outside a transaction")
        self._pending[(table, doc_id)] = new
        if self.listener is not None:
            self.listener(table, doc_id, old, new)

    def compact(self) -> None:
        """Write the snapshot with every change so far and start a new, empty journal.

        Raises ``OSError`` if the snapshot could not be written (nothing changed on disk then).
        """
        with self.transaction():
            self._commit()
            self._write_snapshot_and_journal(self._store_id, self._generation + 1)

    def start_new_store(self, tables: Tables | None = None) -> None:
        """Replace the files by a brand-new store (new store id) holding ``tables``.

        Used by reset and by recovery from a corrupt file, after the old files were moved away.
        Must be called with the file lock held (inside :meth:`transaction` or :meth:`locked`).
        Raises ``OSError`` if the files cannot be written; memory is then re-read from disk on
        the next use.
        """
        self._pending.clear()
        self._rewrite_all = False
        self._tables = tables if tables is not None else {}
        store_id = uuid.uuid4().hex
        try:
            self._write_snapshot(store_id, 0, covers=None)
            self._write_journal(store_id, 0, after=None)
        except OSError:
            self._stale = True
            raise
        self._stale = False
        if self.on_reload is not None:
            self.on_reload(self._tables)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the thread and file locks without reading anything (for recovery/reset)."""
        with self._thread_lock:
            outermost = self._depth == 0
            if outermost:
                self._acquire_file_lock()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if outermost:
                    self._file_lock.release()

    def reload_on_next_use(self) -> None:
        """Forget what is in memory: the next transaction reads the files again."""
        self._stale = True

    @property
    def journal_size(self) -> int:
        """Bytes of journal this process has read or written (header included)."""
        return self._offset

    # ---- loading ------------------------------------------------------------------------------

    def _corrupt(self, path: Path, reason: str) -> StoreCorruptError:
        return StoreCorruptError(
            f"The progress store file {path} is damaged: {reason}. Both files of the store (the "
            f"snapshot {self.path} and the journal {self.journal_path}) were left as they are. "
            f"Restore them from a backup (files named {self.path.name}.backup-* next to them), or "
            "start a new store (both files are then kept aside as *.corrupt-<time>); the masks "
            "already saved are not affected either way.",
            path,
            (self.path, self.journal_path),
        )

    def _read_snapshot(self) -> tuple[str, int, Tables, Any]:
        try:
            with open(self.path, "rb") as f:
                self._snapshot_ino = os.fstat(f.fileno()).st_ino
                raw = f.read()
        except OSError as exc:
            raise StoreCorruptError(
                f"Cannot read the progress store {self.path}: {exc}. Check the file's permissions.",
                self.path,
                (self.path, self.journal_path),
            ) from exc
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._corrupt(self.path, f"not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
            raise self._corrupt(self.path, "it is not a DEXTR progress store")
        if data.get("version") != SNAPSHOT_VERSION:
            raise self._corrupt(
                self.path, f"unknown store version {data.get('version')!r} (this tool reads "
                f"version {SNAPSHOT_VERSION})"
            )
        tables = data.get("tables")
        store_id = data.get("store")
        generation = data.get("generation")
        if (
            not isinstance(tables, dict)
            or not all(isinstance(t, dict) for t in tables.values())
            or not isinstance(store_id, str)
            or not isinstance(generation, int)
        ):
            raise self._corrupt(self.path, "its tables, store id or generation are missing")
        covers = data.get("covers", _ABSENT)
        if covers is not _ABSENT and covers is not None and not (
            isinstance(covers, list) and len(covers) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in covers)
        ):
            raise self._corrupt(self.path, f"its 'covers' entry {covers!r} is not [generation, offset]")
        reason = self._tables_problem(tables)
        if reason is not None:
            raise self._corrupt(self.path, reason)
        return store_id, generation, tables, covers

    def _tables_problem(self, tables: Tables) -> str | None:
        """Why a document of a snapshot just read is malformed, or None.

        Every document must be a JSON object (checked here); then ``on_reload`` checks them all in
        its one pass (``validate`` each one when there is no ``on_reload``).
        """
        if self.on_reload is None or not all(
            set(map(type, table.values())) <= {dict} for table in tables.values()
        ):
            for name, table in tables.items():
                for doc_id, doc in table.items():
                    reason = self._document_problem(name, doc_id, doc)
                    if reason is not None:
                        return reason
        if self.on_reload is not None:
            problem = self.on_reload(tables)
            if problem is not None:
                return _record_problem(*problem)
        return None

    def _document_problem(self, table: str, doc_id: str, doc: Any) -> str | None:
        if not isinstance(doc, dict):
            return _record_problem(table, doc_id, f"is a {_type_name(doc)} ({_dumps(doc)[:60]}), "
                                   "not a document")
        if self.validate is not None:
            reason = self.validate(table, doc_id, doc)
            if reason is not None:
                return _record_problem(table, doc_id, reason)
        return None

    def _entry_problem(self, entry: Any) -> str | None:
        """Why a parsed journal line is not ``{"c": [[table, doc_id, document or null], ...]}``."""
        if not isinstance(entry, dict) or "c" not in entry:
            return 'is not a journal entry {"c": [...]}'
        changes = entry["c"]
        if not isinstance(changes, list):
            return f'has "c": {_dumps(changes)[:60]}, not a list of changes'
        for change in changes:
            if not (isinstance(change, list) and len(change) == 3
                    and isinstance(change[0], str) and isinstance(change[1], str)):
                return f"holds a change {_dumps(change)[:60]} that is not [table, doc_id, document]"
            if change[2] is not None:
                reason = self._document_problem(change[0], change[1], change[2])
                if reason is not None:
                    return f"changes {reason}"
        return None

    @staticmethod
    def _parse_header(line: bytes) -> dict | None:
        if not line.endswith(b"\n"):
            return None
        try:
            header = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return None
        if (
            not isinstance(header, dict)
            or not isinstance(header.get("store"), str)
            or not isinstance(header.get("generation"), int)
        ):
            return None
        return header

    def _first_line(self) -> bytes:
        with open(self.journal_path, "rb") as f:
            return f.readline()

    def _open_journal(self) -> None:
        """Point the append handle at the journal file now at :attr:`journal_path`."""
        fd = os.open(self.journal_path, os.O_RDWR | os.O_APPEND)
        if self._journal_fd is not None:
            os.close(self._journal_fd)
        self._journal_fd = fd
        self._journal_ino = os.fstat(fd).st_ino

    def _load(self) -> None:
        """(Re)load snapshot and journal from disk; file lock held.

        ``on_reload`` gets the snapshot's tables when they are read, the journal's changes then go
        to ``listener`` (see the class docstring).
        """
        self._stale = False  # set again below if the journal cannot be opened
        with _gc_paused():
            self._load_unpaused()

    def _remove_temp_files(self) -> None:
        # Temp files left by a process killed while writing (we hold the lock: none is live).
        for name in (self.path.name, self.journal_path.name):
            for pattern in (f".{name}.tmp-*", f".{name}.*.tmp"):
                for leftover in self.path.parent.glob(pattern):
                    with suppress(OSError):
                        leftover.unlink()

    def _load_unpaused(self) -> None:
        self._remove_temp_files()
        self._pending.clear()
        self._rewrite_all = False
        self._compact_at = self.compact_bytes
        if not self.path.exists():
            if self.journal_path.exists():
                raise self._corrupt(
                    self.journal_path,
                    f"its snapshot {self.path} is missing (deleted or moved?), and the journal "
                    "only holds the changes made after it; put the snapshot back (e.g. from a "
                    "backup)",
                )
            self._tables = {}
            if self.on_reload is not None:
                self.on_reload(self._tables)
            store_id = uuid.uuid4().hex
            self._new_files(lambda: (self._write_snapshot(store_id, 0, covers=None),
                                     self._write_journal(store_id, 0, after=None)))
            return
        store_id, generation, tables, covers = self._read_snapshot()
        self._tables = tables
        self._store_id, self._generation = store_id, generation
        if not self.journal_path.exists():
            # The snapshot holds everything: a crash right after it was written (new store, reset).
            self._new_files(lambda: self._write_journal(store_id, generation, after=None))
            return
        first = self._first_line()
        header = self._parse_header(first)
        if header is None:
            raise self._corrupt(
                self.journal_path,
                f"its first line (the header naming the store and generation) cannot be read: "
                f"{first[:80]!r}",
            )
        if header["store"] != store_id:
            raise self._corrupt(
                self.journal_path,
                f"it belongs to another store (store id {header['store']}; the snapshot {self.path} "
                f"is store {store_id}): was one of the two files copied from elsewhere?",
            )
        jgen = header["generation"]
        apply_from = len(first)
        if jgen == generation:
            pass
        elif jgen > generation:
            raise self._corrupt(
                self.journal_path,
                f"it continues generation {jgen} but the snapshot {self.path} is generation "
                f"{generation} (was the snapshot replaced by an older copy?)",
            )
        elif isinstance(covers, list) and covers[0] == jgen and covers[1] >= len(first):
            apply_from = covers[1]  # a compaction stopped after its snapshot: see the docstring
        elif covers is _ABSENT and jgen == generation - 1:
            # A first-version snapshot (no "covers") always held its whole previous journal.
            self._new_files(lambda: self._write_journal(store_id, generation, after=None))
            return
        else:
            raise self._corrupt(
                self.journal_path,
                f"it is generation {jgen}, which the snapshot {self.path} (generation "
                f"{generation}, covering {covers if covers is not _ABSENT else 'unknown'}) does "
                "not continue from",
            )
        self._generation = jgen
        self._open_journal()
        self._offset = len(first)
        self._read_journal_tail(notify=True, apply_from=apply_from)

    def _new_files(self, write: Callable[[], Any]) -> None:
        try:
            write()
        except OSError as exc:
            raise StoreWriteError(
                f"Could not create the progress store files {self.path} / {self.journal_path}: "
                f"{exc}. Check the disk space and the folder's permissions, then start again."
            ) from exc

    def _read_journal_tail(self, *, notify: bool, apply_from: int = 0) -> None:
        """Apply journal lines from ``self._offset`` to the end; drop a torn last line.

        Lines that start before byte ``apply_from`` are already in the snapshot and skipped.
        """
        assert self._journal_fd is not None
        size = os.fstat(self._journal_fd).st_size
        start = self._offset
        if size <= start and apply_from <= start:
            return
        data = os.pread(self._journal_fd, max(0, size - start), start)
        lines = data.split(b"\n")
        pos = start
        bad_at: int | None = None
        for i, line in enumerate(lines[:-1]):  # lines[-1]: text after the last newline (torn)
            end = pos + len(line) + 1
            if pos < apply_from:
                if end > apply_from:
                    raise self._corrupt(
                        self.journal_path,
                        f"the snapshot {self.path} says it holds this journal up to byte "
                        f"{apply_from}, which is inside a line",
                    )
                pos = end
                continue
            try:
                entry = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                bad_at = i
                break
            reason = self._entry_problem(entry)
            if reason is not None:
                raise self._corrupt(self.journal_path, f"the line at byte {pos} {reason}")
            self._apply_changes(entry["c"], notify=notify)
            pos = end
        if bad_at is not None and any(part.strip(b" \t\r\x00") for part in lines[bad_at + 1 : -1]):
            raise self._corrupt(
                self.journal_path, f"the line at byte {pos} is not a journal entry"
            )
        if pos < apply_from:
            raise self._corrupt(
                self.journal_path,
                f"it is {pos} bytes long, shorter than the {apply_from} bytes the snapshot "
                f"{self.path} says it holds",
            )
        self._offset = pos
        if self._offset < size:
            # A torn tail (crash mid-write, or zeros left by a power cut): never acknowledged. Cut
            # it off so that the next append starts on a clean line. Safe: we hold the file lock.
            os.ftruncate(self._journal_fd, self._offset)
            os.fsync(self._journal_fd)

    def _apply_changes(self, changes: list, *, notify: bool) -> None:
        for table_name, doc_id, doc in changes:
            table = self._tables.setdefault(table_name, {})
            old = table.get(doc_id)
            if doc is None:
                table.pop(doc_id, None)
            else:
                table[doc_id] = doc
            if notify and self.listener is not None and (old is not None or doc is not None):
                self.listener(table_name, doc_id, old, doc)

    def _catch_up(self) -> None:
        """Apply what another process wrote since we last looked; file lock held."""
        try:
            st = os.stat(self.journal_path)
        except FileNotFoundError:
            self._load()
            return
        snapshot_ino = _ino(self.path)
        if st.st_ino == self._journal_ino and self._journal_fd is not None:
            if snapshot_ino != self._snapshot_ino:
                # A new snapshot but the same journal: another process's compaction stopped
                # between its two writes. Read both again (the journal stays valid).
                self._load()
            elif st.st_size > self._offset:
                self._read_journal_tail(notify=True)
            elif st.st_size < self._offset:
                self._load()
            return
        if self._journal_fd is None:
            self._load()
            return
        # The journal was replaced: a compaction (same store, next generation) or a reset. The
        # old journal is still readable through our open handle: finish reading it first, so that
        # after a compaction by the other process we only adopt the new generation (no reload).
        self._read_journal_tail(notify=True)
        first = self._first_line()
        header = self._parse_header(first)
        if (
            header is not None
            and header["store"] == self._store_id
            and header.get("after") == [self._generation, self._offset]
        ):
            # We had read all of the old journal, so the new snapshot equals our memory.
            self._generation = header["generation"]
            self._open_journal()
            self._snapshot_ino = snapshot_ino
            self._offset = len(first)
            self._read_journal_tail(notify=True)
        else:
            self._load()

    # ---- writing ------------------------------------------------------------------------------

    def _write_snapshot(self, store_id: str, generation: int, covers: Any = "current") -> Any:
        """Write the snapshot of memory; returns its ``covers``. OSError: the old one is intact."""
        if covers == "current":
            covers = [self._generation, self._offset]
        snapshot = {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "store": store_id,
            "generation": generation,
            "covers": covers,
            "saved_at": time.time(),
            "tables": self._tables,
        }
        with _gc_paused():  # a tuple per key while encoding: see _gc_paused
            data = _dumps(snapshot).encode()
        atomic_write(self.path, data)
        self._snapshot_ino = _ino(self.path)
        return covers

    def _write_journal(self, store_id: str, generation: int, after: list | None) -> None:
        """Start a new journal. OSError only if the old journal is still in place and in use."""
        header = (_dumps({"store": store_id, "generation": generation, "after": after})
                  + "\n").encode()
        atomic_write(self.journal_path, header)
        # From here on the new journal is the one on disk.
        self._store_id = store_id
        self._generation = generation
        self._offset = len(header)
        try:
            self._open_journal()
        except OSError as exc:
            # Never append to the replaced journal's handle: reload before the next use.
            if self._journal_fd is not None:
                with suppress(OSError):
                    os.close(self._journal_fd)
                self._journal_fd = None
            self._stale = True
            log.warning("Could not open the new journal %s (%s); it is read again on the next "
                        "use of the store", self.journal_path, exc)

    def _write_snapshot_and_journal(
        self, store_id: str, generation: int, after: list | None | str = "current"
    ) -> bool:
        """Snapshot, then the journal that continues it; True when both were written.

        Raises ``OSError`` only when the snapshot could not be written (nothing changed on disk).
        A failure after the snapshot's rename is logged and False returned: the old journal stays
        valid with the new snapshot (its ``covers``) and is still appended to.
        """
        covers = self._write_snapshot(store_id, generation, covers=after)
        try:
            self._write_journal(store_id, generation, covers)
        except OSError as exc:
            log.warning(
                "%s: the snapshot was written but the new journal could not be (%s); the old "
                "journal is kept and still used, nothing is lost", self.path, exc,
            )
            return False
        return True

    def _write_error(self, exc: BaseException) -> StoreWriteError:
        return StoreWriteError(
            f"Could not save progress to {self.path}: {exc}. The last action was not saved; "
            "check the disk space and the folder's permissions, then try again."
        )

    def _rollback(self) -> None:
        """Drop the uncommitted changes: memory becomes what is on disk again."""
        self._pending.clear()
        self._rewrite_all = False
        try:
            self._load()
        except Exception as exc:  # the disk cannot be read now: read it on the next use
            self._stale = True
            log.warning("Could not re-read %s after a failed write (%s); it is read again on "
                        "the next use", self.path, exc)

    def _append(self, line: bytes) -> None:
        """Append one journal line and fsync it; on error the line is cut off again."""
        if self._journal_fd is None:
            raise OSError("the journal is not open")
        view = memoryview(line)
        try:
            while view:
                written = os.write(self._journal_fd, view)
                view = view[written:]
            os.fsync(self._journal_fd)
        except OSError:
            try:
                os.ftruncate(self._journal_fd, self._offset)
            except OSError:
                # A partial line may be left: reading the journal again cuts it off (torn tail).
                self._stale = True
            raise
        self._offset += len(line)

    def _commit(self) -> None:
        """Persist pending changes: one fsync'd journal line, or a new snapshot; file lock held.

        Raises :class:`StoreWriteError` when nothing could be persisted (memory is re-read from
        disk then); once something is persisted it does not raise (see the module docstring).
        """
        if not self._pending and not self._rewrite_all:
            return
        if self._rewrite_all or len(self._pending) > BULK_CHANGES or self._journal_fd is None:
            try:
                self._write_snapshot_and_journal(self._store_id, self._generation + 1)
            except (OSError, ValueError) as exc:
                self._rollback()
                raise self._write_error(exc) from exc
            self._pending.clear()
            self._rewrite_all = False
            return
        try:
            changes = [[t, d, doc] for (t, d), doc in self._pending.items()]
            self._append((_dumps({"c": changes}) + "\n").encode())
        except (OSError, ValueError) as exc:
            self._rollback()
            raise self._write_error(exc) from exc
        self._pending.clear()
        if self._offset > self._compact_at:
            # The change is on disk (the line above): from here on the call has succeeded.
            try:
                compacted = self._write_snapshot_and_journal(self._store_id, self._generation + 1)
            except (OSError, ValueError) as exc:
                compacted = False
                log.warning("Compacting the progress store %s failed (%s); the journal is kept "
                            "and compaction is tried again later", self.path, exc)
            if compacted:
                self._compact_at = self.compact_bytes
            else:
                self._compact_at = self._offset + max(self.compact_bytes // 8, 1)


class _TrackingView(MutableMapping):
    """The dict TinyDB's table updaters see: int doc ids over the raw str-keyed table.

    Remembers a shallow copy of each document before its first access, so that the changed ones
    can be told apart afterwards without copying the whole table.
    """

    def __init__(self, raw: dict[str, dict]):
        self.raw = raw
        self.before: dict[str, dict | None] = {}

    def _touch(self, key: str) -> None:
        if key not in self.before:
            doc = self.raw.get(key)
            self.before[key] = None if doc is None else dict(doc)

    def __getitem__(self, doc_id):
        key = str(doc_id)
        self._touch(key)
        return self.raw[key]

    def __setitem__(self, doc_id, doc) -> None:
        key = str(doc_id)
        self._touch(key)
        self.raw[key] = doc

    def __delitem__(self, doc_id) -> None:
        key = str(doc_id)
        self._touch(key)
        del self.raw[key]

    def __contains__(self, doc_id) -> bool:
        return str(doc_id) in self.raw

    def __iter__(self):
        return (int(key) for key in list(self.raw))

    def __len__(self) -> int:
        return len(self.raw)


class JournaledTable(Table):
    """TinyDB table that updates the in-memory table in place and journals only what changed."""

    def _update_table(self, updater) -> None:
        storage = self._storage
        if not isinstance(storage, JournaledStorage):  # pragma: no cover - misuse guard
            return super()._update_table(updater)
        with storage.transaction():
            tables = storage.read()
            raw = tables.setdefault(self.name, {})
            view = _TrackingView(raw)
            try:
                updater(view)
            finally:
                for key, old in view.before.items():
                    new = raw.get(key)
                    if old != new:
                        storage.record(self.name, key, old, new)
                self.clear_cache()


class JournaledTinyDB(TinyDB):
    """TinyDB whose tables are :class:`JournaledTable` (use with :class:`JournaledStorage`)."""

    table_class = JournaledTable


def open_journaled_db(storage: JournaledStorage) -> JournaledTinyDB:
    """A TinyDB document API over an already opened :class:`JournaledStorage`."""
    return JournaledTinyDB(storage=lambda: storage)
