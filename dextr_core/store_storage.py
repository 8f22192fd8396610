"""TinyDB storage for the progress store: tables in memory, a JSON snapshot plus an fsync'd journal.

TinyDB's own ``JSONStorage`` rereads and rewrites the whole file on every call, which takes a
third of a second per update at 100,000 images. :class:`JournaledStorage` keeps every table in
memory and persists it as two files next to each other:

``<store>``
    the snapshot: one JSON object ``{"format", "version", "store", "generation", "saved_at",
    "tables": {table: {doc_id: document}}}``, written atomically (temp file, fsync, rename, fsync
    of the folder).
``<store>.journal``
    an append-only log. Its first line is a header ``{"store", "generation", "after"}``; every
    acknowledged write adds one line ``{"c": [[table, doc_id, document or null], ...]}`` holding
    the full new state of each document it touched (null = removed), then fsyncs. Replaying a line
    twice gives the same state, so a crash between two steps of a compaction loses nothing.
``<store>.lock``
    the inter-process lock (:class:`filelock.FileLock`).

Every read or write runs inside :meth:`JournaledStorage.transaction`, which takes a thread lock and
the file lock, first applies the journal lines another process appended since this one last looked
(tracked by the journal's inode, its generation and the byte offset read so far), and on the way out
appends one journal line with every change of the transaction. When the journal passes
``compact_bytes`` (or one transaction changes many documents) the snapshot is rewritten and the
journal started again with the next generation.

:class:`JournaledTable` is the TinyDB table class that goes with it: its ``_update_table`` works on
the in-memory table in place and reports exactly the documents that changed, instead of copying the
whole table on every write. Documents handed to TinyDB's update callables must have their nested
values replaced, not mutated in place (the change detection compares shallow copies).
"""

from __future__ import annotations

import gc
import json
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

from .errors import DextrError
from .fileio import atomic_write

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


#: Seconds between two tries to take the store's file lock while another process holds it.
LOCK_POLL_S = 0.002


class StoreCorruptError(DextrError):
    """The progress store's files cannot be read; the message names the file and what to do.

    ``path`` is the damaged file. Nothing is renamed or replaced when this is raised.
    """

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = Path(path)


class StoreBusyError(DextrError):
    """Another process held the store's lock for too long; nothing was changed."""


class StoreWriteError(DextrError):
    """Progress could not be written to disk (disk full, permissions); the change was not saved."""


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while millions of small objects are created.

    Loading a large store builds them all at once and would trigger many useless collections
    (they hold no cycles); pausing them cuts the opening time by about a third.
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


class JournaledStorage(Storage):
    """TinyDB :class:`~tinydb.storages.Storage` keeping tables in memory, durable via a journal.

    ``path`` is the snapshot file (created, with its folder, when missing). ``listener`` is called
    for every document change, local or read back from another process's journal lines, with the
    old and new document (``None`` for absent); ``on_reload(tables)`` is called after the whole
    content was (re)loaded from disk. Raises :class:`StoreCorruptError` when the files cannot be
    understood.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        listener: ChangeListener | None = None,
        on_reload: Callable[[Tables], None] | None = None,
        compact_bytes: int = DEFAULT_COMPACT_BYTES,
        lock_timeout_s: float = 60.0,
    ):
        self.path = Path(path)
        self.journal_path = self.path.with_name(self.path.name + ".journal")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.listener = listener
        self.on_reload = on_reload
        self.compact_bytes = int(compact_bytes)
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
        on disk (fsync'd) when the outermost ``with`` block returns normally; if the block raises,
        the changes made before the exception are committed too (memory and disk must agree).
        """
        with self.locked():
            outermost = self._depth == 1
            try:
                if outermost:
                    if self._stale:
                        self._load()
                    else:
                        self._catch_up()
                yield
            finally:
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
        """Write the snapshot with every change so far and start a new, empty journal."""
        with self.transaction():
            self._commit()
            self._write_snapshot_and_journal(self._store_id, self._generation + 1)

    def start_new_store(self, tables: Tables | None = None) -> None:
        """Replace the files by a brand-new store (new store id) holding ``tables``.

        Used by reset and by recovery from a corrupt file, after the old files were moved away.
        Must be called with the file lock held (inside :meth:`transaction` or :meth:`locked`).
        """
        self._pending.clear()
        self._rewrite_all = False
        self._tables = tables if tables is not None else {}
        self._write_snapshot_and_journal(uuid.uuid4().hex, 0, after=None)
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

    @property
    def journal_size(self) -> int:
        """Bytes of journal this process has read or written (header included)."""
        return self._offset

    # ---- loading ------------------------------------------------------------------------------

    def _corrupt(self, path: Path, reason: str) -> StoreCorruptError:
        return StoreCorruptError(
            f"The progress store file {path} is damaged: {reason}. It was left as it is. Restore "
            f"it from a backup (files named {self.path.name}.backup-* next to it), or start a new "
            "store (the damaged files are then kept as *.corrupt-<time>); the masks already saved "
            "are not affected either way.",
            path,
        )

    def _read_snapshot(self) -> tuple[str, int, Tables]:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise StoreCorruptError(
                f"Cannot read the progress store {self.path}: {exc}. Check the file's permissions.",
                self.path,
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
        return store_id, generation, tables

    def _parse_header(self, line: bytes) -> dict | None:
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

    def _open_journal(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        fd = os.open(self.journal_path, os.O_RDWR | os.O_APPEND)
        self._journal_fd = fd
        self._journal_ino = os.fstat(fd).st_ino

    def _load(self) -> None:
        """(Re)load snapshot and journal from disk; file lock held."""
        with _gc_paused():
            self._load_unpaused()

    def _load_unpaused(self) -> None:
        # Temp files left by a process killed while writing (we hold the lock: none is live).
        for name in (self.path.name, self.journal_path.name):
            for leftover in self.path.parent.glob(f".{name}.tmp-*"):
                with suppress(OSError):
                    leftover.unlink()
        self._pending.clear()
        self._rewrite_all = False
        if not self.path.exists():
            self._tables = {}
            self._write_snapshot_and_journal(uuid.uuid4().hex, 0, after=None)
            self._stale = False
            if self.on_reload is not None:
                self.on_reload(self._tables)
            return
        store_id, generation, tables = self._read_snapshot()
        self._tables = tables
        self._store_id = store_id
        self._generation = generation
        header = None
        if self.journal_path.exists():
            with open(self.journal_path, "rb") as f:
                first = f.readline()
            header = self._parse_header(first) if first.endswith(b"\n") else None
        if (
            header is None
            or header["store"] != store_id
            or header["generation"] < generation
        ):
            # No journal, a torn header, or one left by a compaction/reset that stopped between
            # its two renames: the snapshot already holds everything. Start a fresh journal.
            self._write_journal(store_id, generation, after=None)
        elif header["generation"] > generation:
            raise self._corrupt(
                self.journal_path,
                f"it continues generation {header['generation']} but the snapshot {self.path} is "
                f"generation {generation} (was the snapshot replaced by an older copy?); if you "
                "restored the snapshot on purpose, delete the journal file",
            )
        else:
            self._open_journal()
            self._offset = 0
            self._read_journal_tail(notify=False, from_start=True)
        self._stale = False
        if self.on_reload is not None:
            self.on_reload(self._tables)

    def _read_journal_tail(self, *, notify: bool, from_start: bool = False) -> None:
        """Apply journal lines from ``self._offset`` to the end; drop a torn last line."""
        assert self._journal_fd is not None
        size = os.fstat(self._journal_fd).st_size
        start = self._offset
        if size <= start:
            return
        data = os.pread(self._journal_fd, size - start, start)
        lines = data.split(b"\n")
        consumed = 0
        header_pending = from_start
        bad_at: int | None = None
        for i, line in enumerate(lines):
            is_last = i == len(lines) - 1
            if is_last:
                # Text after the last newline: a write that never completed (never acknowledged).
                break
            if header_pending:
                header_pending = False
                consumed += len(line) + 1
                continue
            try:
                entry = json.loads(line)
                changes = entry["c"]
            except (ValueError, UnicodeDecodeError, KeyError, TypeError):
                bad_at = i
                break
            self._apply_changes(changes, notify=notify)
            consumed += len(line) + 1
        if bad_at is not None and any(part.strip() for part in lines[bad_at + 1 : -1]):
            raise self._corrupt(
                self.journal_path,
                f"line {bad_at + 1} after byte {start + consumed} is not a journal entry",
            )
        self._offset = start + consumed
        if self._offset < size:
            # A torn tail (crash mid-write, or zeros left by a power cut): cut it off so that the
            # next append starts on a clean line. Safe: we hold the file lock.
            os.ftruncate(self._journal_fd, self._offset)
            os.fsync(self._journal_fd)

    def _apply_changes(self, changes: list, *, notify: bool) -> None:
        for change in changes:
            table_name, doc_id, doc = change
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
        if st.st_ino == self._journal_ino:
            if st.st_size > self._offset:
                self._read_journal_tail(notify=True)
            elif st.st_size < self._offset:
                self._load()
            return
        # The journal was replaced: a compaction (same store, next generation) or a reset. The
        # old journal is still readable through our open handle: finish reading it first, so that
        # after a compaction by the other process we only adopt the new generation (no reload).
        self._read_journal_tail(notify=True)
        with open(self.journal_path, "rb") as f:
            first = f.readline()
        header = self._parse_header(first) if first.endswith(b"\n") else None
        if (
            header is not None
            and header["store"] == self._store_id
            and header.get("after") == [self._generation, self._offset]
        ):
            # We had read all of the old journal, so the new snapshot equals our memory.
            self._generation = header["generation"]
            self._open_journal()
            self._offset = len(first)
            self._read_journal_tail(notify=True)
        else:
            self._load()

    # ---- writing ------------------------------------------------------------------------------

    def _write_journal(self, store_id: str, generation: int, after: list | None) -> None:
        header = _dumps({"store": store_id, "generation": generation, "after": after}) + "\n"
        atomic_write(self.journal_path, header.encode())
        self._store_id = store_id
        self._generation = generation
        self._open_journal()
        self._offset = len(header.encode())

    def _write_snapshot_and_journal(
        self, store_id: str, generation: int, after: list | None | str = "current"
    ) -> None:
        if after == "current":
            after = [self._generation, self._offset]
        snapshot = {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "store": store_id,
            "generation": generation,
            "saved_at": time.time(),
            "tables": self._tables,
        }
        atomic_write(self.path, _dumps(snapshot).encode())
        self._write_journal(store_id, generation, after)

    def _commit(self) -> None:
        """Persist pending changes: one fsync'd journal line, or a new snapshot; file lock held."""
        if not self._pending and not self._rewrite_all:
            return
        try:
            if self._rewrite_all or len(self._pending) > BULK_CHANGES:
                self._pending.clear()
                self._rewrite_all = False
                self._write_snapshot_and_journal(self._store_id, self._generation + 1)
                return
            changes = [[t, d, doc] for (t, d), doc in self._pending.items()]
            line = (_dumps({"c": changes}) + "\n").encode()
            assert self._journal_fd is not None
            view = memoryview(line)
            try:
                while view:
                    written = os.write(self._journal_fd, view)
                    view = view[written:]
                os.fsync(self._journal_fd)
            except OSError:
                # Leave no half line behind; the caller sees the error below.
                with suppress(OSError):
                    os.ftruncate(self._journal_fd, self._offset)
                raise
            self._offset += len(line)
            self._pending.clear()
            if self._offset > self.compact_bytes:
                self._write_snapshot_and_journal(self._store_id, self._generation + 1)
        except (OSError, ValueError) as exc:
            # Memory now holds changes the disk does not: reload from disk on the next use.
            self._pending.clear()
            self._rewrite_all = False
            self._stale = True
            raise StoreWriteError(
                f"Could not save progress to {self.path}: {exc}. The last action was not saved; "
                "check the disk space and the folder's permissions, then try again."
            ) from exc


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
