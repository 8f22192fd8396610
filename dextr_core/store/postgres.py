"""The progress store on PostgreSQL: :class:`PostgresBackend`, SQL only, and :class:`PostgresStore`.

Selected by a ``postgresql://`` location in :func:`dextr_core.store.open_store` (``admin.database``
or the environment variable ``DEXTR_DATABASE_URL``). Several app servers on several machines can
share one database; the file store cannot be shared across machines (file locks over network
filesystems are unreliable). The claim rules, checks and messages are
:mod:`dextr_core.store.rules`' (the same code as over the file store); this module only stores
documents and answers the :class:`~dextr_core.store.backend.Backend` questions in SQL.

How it keeps the file store's promises
--------------------------------------
* Every transaction is ONE database transaction (psycopg 3, a :class:`psycopg_pool.ConnectionPool`
  of connections per backend; nested transactions are savepoints). A call that returned has
  committed; a call that raised rolled back, so it changed nothing.
* An image is changed only while its row is locked (``SELECT ... FOR UPDATE``:
  :meth:`PostgresBackend.image`): claims, objects, completion and skips of one image are
  serialised across every server; the next todo image is picked with ``FOR UPDATE SKIP LOCKED``
  (:meth:`PostgresBackend.free_images`), so concurrent annotators never wait for each other and
  never get the same image (the rules check the status again under the lock).
* ``complete(write=...)`` checks the claim under the row lock, calls ``write(objects)`` and only then
  marks the image done and commits. If ``write`` raises, the transaction is rolled back. If the
  COMMIT itself fails after ``write`` returned (the database went away), the mask file exists and the
  image is still in progress: ``reconcile`` marks it done later, as after a crash of the file store.
* Maintenance (sync, import, reconcile, reset) takes a transaction-level advisory lock
  (:meth:`PostgresBackend.lock_for_maintenance`), so two servers never scan at the same time.

Schema (tables prefixed ``dextr_`` in the connection's schema; version in ``dextr_schema_version``,
migrations in :data:`MIGRATIONS`, applied in order under an advisory lock when a store is opened)::

    dextr_images(id text COLLATE "C" PRIMARY KEY, status, missing, annotator, claimed_at,
                 seconds, n_objects, object_annotators, doc jsonb)
    dextr_events(seq bigserial PRIMARY KEY, time, action, image_id, annotator, detail jsonb)
    dextr_meta(key int PRIMARY KEY, doc jsonb)

``doc`` is exactly the file store's sparse image document (see :mod:`dextr_core.store.records`);
``status``/``missing``/``annotator``/``claimed_at`` are copies of its fields for the indexes, and
``seconds``/``n_objects``/``object_annotators`` (``{annotator: objects}``, NULL without objects)
for the summary's figures (migration 2); :func:`_columns` derives them all from the doc.
``reset`` copies the four tables into a new schema ``dextr_backup_<UTC time>`` of the same database
(in the same transaction that empties them) and returns that schema's name.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .backend import Figures
from .file_backend import ProgressStore
from .records import (
    _META_ID,
    STATUSES,
    Event,
    StoreBusyError,
    StoreInputError,
    StoreWriteError,
    _is_default,
    _stamp,
)
from .rules import Store

#: ``(version, SQL)`` applied in order; a database at a higher version than this list is refused.
MIGRATIONS: list[tuple[int, str]] = [
    (1, """
        CREATE TABLE dextr_images (
            id text COLLATE "C" PRIMARY KEY,
            status text NOT NULL,
            missing boolean NOT NULL DEFAULT false,
            annotator text,
            claimed_at double precision,
            doc jsonb NOT NULL
        );
        CREATE INDEX dextr_images_todo ON dextr_images (id) WHERE status = 'todo' AND NOT missing;
        CREATE INDEX dextr_images_claims ON dextr_images (annotator, id)
            WHERE status = 'in_progress';
        CREATE INDEX dextr_images_status ON dextr_images (status);
        CREATE TABLE dextr_events (
            seq bigserial PRIMARY KEY,
            time double precision NOT NULL,
            action text NOT NULL,
            image_id text,
            annotator text,
            detail jsonb NOT NULL DEFAULT '{}'
        );
        CREATE INDEX dextr_events_time ON dextr_events (time);
        CREATE TABLE dextr_meta (key integer PRIMARY KEY, doc jsonb NOT NULL);
    """),
    # summary() figures as columns (reading them out of every JSON document took most of its time)
    (2, """
        ALTER TABLE dextr_images
            ADD COLUMN seconds double precision NOT NULL DEFAULT 0,
            ADD COLUMN n_objects integer NOT NULL DEFAULT 0,
            ADD COLUMN object_annotators jsonb;
        UPDATE dextr_images SET
            seconds = coalesce((doc->>'seconds')::float8, 0),
            n_objects = coalesce((doc->>'n_objects')::int, 0),
            object_annotators = (
                SELECT jsonb_object_agg(who, n) FROM (
                    SELECT coalesce(o->>'annotator', '') AS who, count(*) AS n
                    FROM jsonb_array_elements(coalesce(doc->'objects', '[]'::jsonb)) AS o
                    GROUP BY 1) AS per_annotator);
    """),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
_TABLES = ("dextr_images", "dextr_events", "dextr_meta", "dextr_schema_version")
#: advisory lock keys: schema migrations, maintenance (sync/import/reconcile/reset/copy)
_LOCK_MIGRATE, _LOCK_MAINTENANCE = 0x64657874_01, 0x64657874_02


def is_postgres_url(location: str) -> bool:
    """Whether ``location`` is a ``postgresql://`` / ``postgres://`` address."""
    scheme = location.split("://", 1)[0].lower() if "://" in location else ""
    return scheme in ("postgresql", "postgres")


def redact_url(url: str) -> str:
    """``url`` without its password (for messages and logs); never raises, even for a URL that
    does not parse (a port that is not a number)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"://([^:/@]*):[^@/]*@", r"://\1:***@", url)
    user, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in user:
        return url
    return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}"))


#: The shape of a PostgreSQL address, for messages.
URL_EXAMPLE = "postgresql://USER:PASSWORD@HOST:5432/DATABASE"


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable ``postgresql://`` address (a sentence), None when it is.

    Checks what libpq would refuse only when connecting, or what would crash a page: a port that
    is not a number from 1 to 65535, spaces, unknown query parameters (psycopg's own parser).
    """
    try:
        parts = urlsplit(url)
        if "," not in parts.netloc:  # several hosts (h1:5432,h2:5433) are libpq's to check
            _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"it does not parse ({exc})"
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        return f"it starts with {parts.scheme}:// instead of postgresql://"
    with contextlib.suppress(ImportError):  # without the driver _import_driver says so later
        from psycopg import ProgrammingError, conninfo

        try:
            params = conninfo.conninfo_to_dict(url)
        except ProgrammingError as exc:
            return _first_line(exc)
        for port in str(params.get("port") or "").split(","):
            if port and not (port.isdigit() and 1 <= int(port) <= 65535):
                return f"its port {port!r} is not a number from 1 to 65535"
    return None


def _connect_failure(exc: BaseException) -> str:
    """What a failed first connection means and what to do, from the server's own reason."""
    reason = _first_line(exc)
    low = str(exc).lower()
    if "password authentication failed" in low or "no password supplied" in low:
        fix = ("the user name or password is wrong: correct them in the address, or set the "
               "user's password on the server (ALTER USER ... PASSWORD ...)")
    elif "does not exist" in low and "database" in low:
        fix = ("that database does not exist on the server: create it (createdb NAME, or "
               "CREATE DATABASE) or correct the name after the last / of the address")
    elif "does not exist" in low and "role" in low:
        fix = "that user does not exist on the server: create it or correct the user name"
    elif "pg_hba.conf" in low:
        fix = "the server does not let this machine or user in: add a line for it to pg_hba.conf"
    elif "timeout" in low or "timed out" in low:
        fix = "no answer in time: check the host name and port, and that a firewall lets it through"
    else:
        fix = "check that the server is running and the host name and port are right"
    return f"{reason}. What to do: {fix}"


def _import_driver():
    try:
        import psycopg
        import psycopg_pool
        from psycopg.types.json import Jsonb
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise StoreInputError(
            "admin.database is a PostgreSQL address, but the PostgreSQL driver is not installed "
            f"({exc}). Install it with: pip install 'psycopg[binary]' psycopg-pool (see "
            "requirements-dev.txt), or set admin.database to a file path."
        ) from None
    return psycopg, psycopg_pool, Jsonb


def _columns(doc: dict, jsonb) -> tuple:
    """The row's copies of ``doc``'s fields, in the order of :data:`_COLUMNS` (after ``id``)."""
    objects = doc.get("objects") or ()
    by = Counter(o.get("annotator") or "" for o in objects)
    return (doc["status"], bool(doc.get("missing")), doc.get("annotator"), doc.get("claimed_at"),
            float(doc.get("seconds") or 0.0), int(doc.get("n_objects") or 0),
            jsonb(dict(by)) if by else None, jsonb(doc))


_COLUMNS = ("status", "missing", "annotator", "claimed_at", "seconds", "n_objects",
            "object_annotators", "doc")
_CASTS = ("text", "boolean", "text", "float8", "float8", "integer", "jsonb", "jsonb")


class _Tx:
    """One open transaction of one thread: its connection and the rows it has locked.

    Row updates and events are buffered (``pending_*``) and written in ONE statement before the
    next statement of the transaction and before COMMIT (:meth:`flush`): a claim or a completion
    costs a few round trips to the server instead of one per field change. :attr:`conn` flushes
    before every statement it runs, so reads in the transaction always see its own changes.
    """

    def __init__(self, raw, jsonb):
        self.raw = raw
        self.conn = _Conn(self)
        self._jsonb = jsonb
        self.docs: dict[str, dict] = {}  # image docs read under FOR UPDATE (or written) here
        self.ids: dict[str, None] | None = None  # every image id, loaded on demand (maintenance)
        self.missing: set[str] | None = None
        self.pending_docs: dict[str, dict] = {}
        self.pending_events: list[tuple] = []
        self.fresh = True  # no statement run yet (SET TRANSACTION still possible)

    def forget(self) -> None:
        self.docs.clear()
        self.ids = None
        self.missing = None
        self.pending_docs.clear()
        self.pending_events.clear()

    def flush(self) -> None:
        """Write the buffered row updates and events (one statement)."""
        docs, events = self.pending_docs, self.pending_events
        if not docs and not events:
            return
        parts, params = [], []
        if docs:
            row = "(%s::text, " + ", ".join(f"%s::{c}" for c in _CASTS) + ")"
            rows = ", ".join([row] * len(docs))
            sets = ", ".join(f"{c} = v.{c}" for c in _COLUMNS)
            parts.append(
                f"u AS (UPDATE dextr_images AS i SET {sets} FROM (VALUES {rows}) AS v "
                f"(id, {', '.join(_COLUMNS)}) WHERE i.id = v.id)")
            for image_id, doc in docs.items():
                params += [image_id, *_columns(doc, self._jsonb)]
        if events:
            rows = ", ".join(["(%s::float8, %s::text, %s::text, %s::text, %s::jsonb)"]
                             * len(events))
            tail = (f"INSERT INTO dextr_events (time, action, image_id, annotator, detail) "
                    f"VALUES {rows}")
            for event in events:
                params += list(event)
        else:
            tail = "SELECT 1"
        sql = (f"WITH {', '.join(parts)} {tail}" if parts else tail)
        self.pending_docs, self.pending_events = {}, []
        self.fresh = False
        try:
            self.raw.execute(sql, params)
        except BaseException:
            self.forget()
            raise


class _Conn:
    """The transaction's connection as the store code uses it: every use flushes first."""

    def __init__(self, tx: _Tx):
        self._tx = tx

    def execute(self, sql, params=None):
        self._tx.flush()
        self._tx.fresh = False
        return self._tx.raw.execute(sql, params)

    def cursor(self):
        self._tx.flush()
        return self._tx.raw.cursor()

    def transaction(self):
        self._tx.flush()
        self._tx.fresh = False
        return self._tx.raw.transaction()




class _Transactions:
    """The transaction context of a :class:`PostgresBackend` (one :class:`_Tx` per thread)."""

    def __init__(self, backend: PostgresBackend):
        self._store = backend
        self._local = threading.local()

    def current(self) -> _Tx:
        tx = getattr(self._local, "tx", None)
        if tx is None:
            raise RuntimeError("a PostgresBackend method was called outside a transaction")
        return tx

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        """One transaction per outermost call (savepoints inside); errors become store errors."""
        tx = getattr(self._local, "tx", None)
        if tx is not None:
            try:
                with tx.conn.transaction():
                    yield tx
                    tx.flush()  # inside the savepoint: a later savepoint's rollback keeps it
            except BaseException:
                tx.forget()  # rolled back to the savepoint: re-read rows (they stay locked)
                raise
            return
        store = self._store
        psycopg = store._psycopg
        try:
            with (store._pool.connection(timeout=store.connect_timeout_s) as conn,
                  conn.transaction()):
                tx = _Tx(conn, store._Jsonb)
                self._local.tx = tx
                try:
                    yield tx
                    tx.flush()
                finally:
                    self._local.tx = None
                    conn._dextr_used = time.monotonic()
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected,
                psycopg.errors.SerializationFailure, psycopg.errors.QueryCanceled) as exc:
            raise StoreBusyError(
                f"The progress database {store.path} is busy ({_first_line(exc)}); nothing was "
                "changed. Try again in a moment."
            ) from exc
        except (psycopg.Error, store._psycopg_pool.PoolTimeout) as exc:
            raise StoreWriteError(
                f"The progress database {store.path} could not be used ({_first_line(exc)}). "
                "Your last change may not have been saved; check that the database server is "
                "running and reachable, then try again (a retry never duplicates an object)."
            ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__



class PostgresBackend:
    """The documents of a progress store in the PostgreSQL database at ``url``
    (``postgresql://user@host/db``). ``pool_size``: connections this object keeps (default 8);
    ``connect_timeout_s``: how long a call waits for a connection; ``lock_timeout_s``: how long
    a call waits for a row another server holds before it raises :class:`StoreBusyError`.
    ``clock`` stamps the store's creation. :attr:`path` is the URL without its password.
    """

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time, pool_size: int = 8,
                 connect_timeout_s: float = 10.0, lock_timeout_s: float = 30.0):
        self.url = str(url)
        self.path = redact_url(self.url)
        self.clock = clock
        problem = url_problem(self.url)
        if problem is not None:
            raise StoreInputError(
                f"The progress database address {self.path} (admin.database or "
                f"DEXTR_DATABASE_URL) is not a valid PostgreSQL address: {problem}. Write it as "
                f"{URL_EXAMPLE} (special characters in the password percent-encoded, e.g. %40 "
                "for @).")
        self._psycopg, self._psycopg_pool, self._Jsonb = _import_driver()
        self.connect_timeout_s = float(connect_timeout_s)
        self._transactions = _Transactions(self)
        lock_ms = max(1, int(lock_timeout_s * 1000))

        def configure(conn) -> None:
            conn.execute(f"SET lock_timeout = {lock_ms}")

        self._first_connection()
        self._pool = self._psycopg_pool.ConnectionPool(
            self.url, min_size=1, max_size=max(1, int(pool_size)), open=False,
            kwargs={"autocommit": True}, configure=configure,
            check=self._check_idle_connection,
            name=f"dextr-store-{id(self):x}",
        )
        try:
            self._pool.open(wait=True, timeout=self.connect_timeout_s)
        except (self._psycopg.Error, self._psycopg_pool.PoolTimeout) as exc:
            self._pool.close()
            raise StoreWriteError(
                f"Could not connect to the progress database {self.path} within "
                f"{self.connect_timeout_s:g} s ({_first_line(exc)}). Check that the server is "
                "running, the address (admin.database or DEXTR_DATABASE_URL) and the password."
            ) from exc
        try:
            self._migrate()
        except BaseException:
            self._pool.close()
            raise

    def _first_connection(self) -> None:
        """Connect once before the pool starts, so that a refusal reaches the user with the
        server's own reason (the pool only reports that it timed out)."""
        try:
            conn = self._psycopg.connect(
                self.url, connect_timeout=max(1, round(self.connect_timeout_s)), autocommit=True)
        except self._psycopg.Error as exc:
            raise StoreWriteError(
                f"Could not connect to the progress database {self.path} (admin.database or "
                f"DEXTR_DATABASE_URL): {_connect_failure(exc)}."
            ) from exc
        conn.close()

    def _check_idle_connection(self, conn) -> None:
        """Before a call uses a pooled connection idle for over 2 s, check it is still alive
        (a restarted server or a dropped link): a dead one is replaced instead of failing the
        call. A connection used the moment before is not checked (saves a round trip)."""
        if time.monotonic() - getattr(conn, "_dextr_used", 0.0) > 2.0:
            self._psycopg_pool.ConnectionPool.check_connection(conn)


    # ---- schema ---------------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._transactions.transaction() as tx:
            conn = tx.conn
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_MIGRATE,))
            conn.execute("CREATE TABLE IF NOT EXISTS dextr_schema_version "
                         "(version integer PRIMARY KEY, applied_at double precision NOT NULL)")
            have = conn.execute(
                "SELECT coalesce(max(version), 0) FROM dextr_schema_version").fetchone()[0]
            if have > SCHEMA_VERSION:
                raise StoreInputError(
                    f"The progress database {self.path} has schema version {have}, newer than "
                    f"this program's {SCHEMA_VERSION}. Update the annotator on this server (all "
                    "servers sharing a database must run the same version)."
                )
            for version, sql in MIGRATIONS:
                if version > have:
                    conn.execute(sql)
                    conn.execute("INSERT INTO dextr_schema_version VALUES (%s, %s)",
                                 (version, time.time()))
            conn.execute("INSERT INTO dextr_meta (key, doc) VALUES (%s, %s) "
                         "ON CONFLICT (key) DO NOTHING",
                         (_META_ID, self._Jsonb({"created_at": self.clock()})))

    def schema_version(self) -> int:
        """The schema version of the database (= :data:`SCHEMA_VERSION` once opened)."""
        with self._transactions.transaction() as tx:
            return tx.conn.execute("SELECT max(version) FROM dextr_schema_version").fetchone()[0]


    def close(self) -> None:
        """Close the connection pool (the backend cannot be used afterwards)."""
        self._pool.close()

    def transaction(self):
        """One database transaction per outermost call (savepoints inside)."""
        return self._transactions.transaction()

    def _tx(self) -> _Tx:
        return self._transactions.current()

    def count(self) -> int:
        return self._tx().conn.execute("SELECT count(*) FROM dextr_images").fetchone()[0]

    # ---- one image ------------------------------------------------------------------------------

    def image(self, image_id: str) -> dict | None:
        """The image's document, its row locked until the transaction ends."""
        tx = self._tx()
        doc = tx.docs.get(image_id)
        if doc is None:
            row = tx.conn.execute("SELECT doc FROM dextr_images WHERE id = %s FOR UPDATE",
                                  (image_id,)).fetchone()
            if row is None:
                return None
            doc = tx.docs[image_id] = row[0]
        return doc

    def peek(self, image_id: str) -> dict | None:
        tx = self._tx()
        doc = tx.docs.get(image_id)
        if doc is not None:
            return doc
        row = tx.conn.execute("SELECT doc FROM dextr_images WHERE id = %s",
                              (image_id,)).fetchone()
        return None if row is None else row[0]

    def update(self, image_id: str, fields: dict) -> None:
        tx = self._tx()
        old = self.image(image_id)
        if old is None:
            raise StoreInputError(f"No image {image_id!r} in the progress store {self.path}.")
        doc = dict(old)  # a new dict: callers may still read the old one (e.g. "was": status)
        for key, value in fields.items():
            if _is_default(value):
                doc.pop(key, None)
            else:
                doc[key] = value
        tx.docs[image_id] = tx.pending_docs[image_id] = doc
        if tx.missing is not None:
            (tx.missing.add if doc.get("missing") else tx.missing.discard)(image_id)

    def insert_images(self, docs: list[dict]) -> None:
        """Add new image documents (one COPY into a temporary table, then one INSERT)."""
        tx = self._tx()
        if not docs:
            return
        conn = tx.conn
        columns = ", ".join(("id", *_COLUMNS))
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS dextr_new_rows (LIKE dextr_images) "
                     "ON COMMIT DELETE ROWS")
        conn.execute("DELETE FROM dextr_new_rows")
        with conn.cursor().copy(f"COPY dextr_new_rows ({columns}) FROM STDIN") as copy:
            for doc in docs:
                copy.write_row((doc["id"], *_columns(doc, self._Jsonb)))
        conn.execute(f"INSERT INTO dextr_images ({columns}) SELECT {columns} "
                     "FROM dextr_new_rows ON CONFLICT (id) DO NOTHING")
        if tx.ids is not None:
            tx.ids.update((d["id"], None) for d in docs)

    def log(self, time: float, action: str, image_id: str | None, annotator: str | None,
            detail: dict) -> None:
        self._tx().pending_events.append((time, action, image_id, annotator, self._Jsonb(detail)))

    # ---- claims ---------------------------------------------------------------------------------

    def _select_docs(self, sql: str, params: Sequence = ()) -> list[dict]:
        """Documents read under a row lock: kept as this transaction's copies."""
        tx = self._tx()
        docs = [r[0] for r in tx.conn.execute(sql, params)]
        for doc in docs:
            tx.docs[doc["id"]] = doc
        return docs

    def claims(self, annotator: str | None = None) -> list[dict]:
        if annotator is None:
            return self._select_docs(
                "SELECT doc FROM dextr_images WHERE status = 'in_progress' AND NOT missing "
                "ORDER BY id FOR UPDATE")
        return self._select_docs(
            "SELECT doc FROM dextr_images WHERE status = 'in_progress' AND NOT missing "
            "AND annotator = %s ORDER BY id FOR UPDATE", (annotator,))

    def free_images(self, lapsed_before: float) -> tuple[list[dict], dict | None]:
        """Lapsed claims and the first todo image in one statement, both ``SKIP LOCKED``."""
        tx = self._tx()
        rows = tx.conn.execute(
            "WITH lapsed AS (SELECT doc FROM dextr_images WHERE status = 'in_progress' "
            "AND NOT missing AND (claimed_at IS NULL OR claimed_at <= %s) ORDER BY id "
            "FOR UPDATE SKIP LOCKED), todo AS (SELECT doc FROM dextr_images WHERE "
            "status = 'todo' AND NOT missing ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) "
            "SELECT doc, true FROM lapsed UNION ALL SELECT doc, false FROM todo",
            (lapsed_before,)).fetchall()
        lapsed, todo = [], None
        for doc, was_claimed in rows:
            tx.docs[doc["id"]] = doc
            if was_claimed:
                lapsed.append(doc)
            else:
                todo = doc
        return lapsed, todo

    # ---- reading --------------------------------------------------------------------------------

    def images(self, status: str | None = None, with_objects: bool = False) -> list[dict]:
        where, params = [], []
        if status is not None:
            where.append("status = %s")
            params.append(status)
        if with_objects:
            where.append("doc ? 'objects'")
        sql = "SELECT doc FROM dextr_images"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [r[0] for r in self._tx().conn.execute(sql + " ORDER BY id", params)]

    def image_ids(self, status: str | None = None) -> list[str]:
        conn = self._tx().conn
        if status is None:
            rows = conn.execute("SELECT id FROM dextr_images ORDER BY id")
        else:
            rows = conn.execute("SELECT id FROM dextr_images WHERE status = %s ORDER BY id",
                                (status,))
        return [r[0] for r in rows]

    def events(self, since: float | None = None, limit: int | None = None) -> list[Event]:
        sql = "SELECT time, action, image_id, annotator, detail FROM dextr_events"
        params: list[Any] = []
        if since is not None:
            sql += " WHERE time > %s"
            params.append(float(since))
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(max(0, int(limit)))
        rows = self._tx().conn.execute(sql, params).fetchall()
        return [Event(t, a, i, who, dict(d or {})) for t, a, i, who, d in reversed(rows)]

    def figures(self) -> Figures:
        """The summary's counts by SQL, from one snapshot of the database when the transaction
        is the call's own."""
        tx = self._tx()
        conn = tx.conn
        if tx.fresh:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        f = Figures(by_status=dict.fromkeys(STATUSES, 0), missing=0, objects=0, seconds=0.0)
        done: Counter = Counter()
        skipped: Counter = Counter()
        seconds: Counter = Counter()
        # one pass over the images for the counts and times by status and annotator
        for is_missing, status, who, n, secs in conn.execute(
            "SELECT missing, status, coalesce(annotator, ''), count(*), sum(seconds) "
            "FROM dextr_images GROUP BY 1, 2, 3"
        ):
            if is_missing:
                f.missing += int(n)
                continue
            f.by_status[status] += int(n)
            f.seconds += float(secs or 0.0)
            if status == "done":
                done[who] += int(n)
                seconds[who] += float(secs or 0.0)
            elif status == "skipped":
                skipped[who] += int(n)
        f.done, f.skipped, f.seconds_by = dict(done), dict(skipped), dict(seconds)
        f.objects_by = {who: int(n) for who, n in conn.execute(
            "SELECT o.key, sum(o.value::int) FROM dextr_images, "
            "jsonb_each_text(object_annotators) AS o WHERE NOT missing "
            "AND object_annotators IS NOT NULL GROUP BY o.key")}
        f.objects = sum(f.objects_by.values())
        spo: dict[str, list[float]] = defaultdict(list)
        for who, secs, n in conn.execute(
            "SELECT coalesce(annotator, ''), seconds, n_objects FROM dextr_images "
            "WHERE NOT missing AND status = 'done' AND n_objects > 0"
        ):
            spo[who].append(secs / n)
        f.seconds_per_object = dict(spo)
        f.last_activity = dict(conn.execute(
            "SELECT annotator, max(time) FROM dextr_events WHERE annotator IS NOT NULL "
            "AND annotator <> '' GROUP BY annotator").fetchall())
        f.claims = [d for (d,) in conn.execute(
            "SELECT doc FROM dextr_images WHERE status = 'in_progress' AND NOT missing "
            "ORDER BY id")]
        row = conn.execute("SELECT time FROM dextr_events ORDER BY seq DESC LIMIT 1").fetchone()
        f.last_event = None if row is None else row[0]
        return f

    def review_facts(self) -> list[dict]:
        keys = ("id", "status", "missing", "review", "completed_at")
        return [dict(zip(keys, row, strict=True)) for row in self._tx().conn.execute(
            "SELECT id, status, missing, doc->'review', doc->'completed_at' FROM dextr_images "
            "WHERE status = 'done' OR doc ? 'review'")]

    # ---- maintenance ----------------------------------------------------------------------------

    def lock_for_maintenance(self) -> None:
        """A transaction-level advisory lock: one server's maintenance at a time."""
        self._tx().conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_MAINTENANCE,))

    def all_ids(self) -> dict[str, None]:
        """Every image id (loaded once per transaction; inserts in it are added)."""
        tx = self._tx()
        if tx.ids is None:
            tx.ids = dict.fromkeys(
                r[0] for r in tx.conn.execute("SELECT id FROM dextr_images ORDER BY id"))
        return tx.ids

    def missing_ids(self) -> set[str]:
        tx = self._tx()
        if tx.missing is None:
            tx.missing = {r[0] for r in tx.conn.execute(
                "SELECT id FROM dextr_images WHERE missing")}
        return tx.missing

    def all_images(self) -> list[dict]:
        """Every image document by id, every row locked for this transaction (reconcile)."""
        return self._select_docs("SELECT doc FROM dextr_images ORDER BY id FOR UPDATE")

    def meta(self) -> dict:
        row = self._tx().conn.execute("SELECT doc FROM dextr_meta WHERE key = %s",
                                      (_META_ID,)).fetchone()
        return {} if row is None else dict(row[0])

    def update_meta(self, fields: dict) -> None:
        self._tx().conn.execute(
            "INSERT INTO dextr_meta (key, doc) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
            "SET doc = dextr_meta.doc || EXCLUDED.doc", (_META_ID, self._Jsonb(fields)))

    def reset(self, now: float) -> str:
        """Copy every table into a new schema ``dextr_backup_<UTC time>`` of the same database,
        then empty the store, in this transaction (a failure changes nothing); return the backup
        schema's name. Restore: see docs/scale-out.md."""
        tx = self._tx()
        conn = tx.conn
        taken = {r[0] for r in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'dextr_backup_%%'")}
        base = f"dextr_backup_{_stamp(now).replace('-', '_')}"
        backup = base
        for i in range(1, 10_000):
            if backup not in taken:
                break
            backup = f"{base}_{i}"
        if not re.fullmatch(r"[a-z0-9_]{1,63}", backup):  # pragma: no cover - by construction
            raise StoreInputError(f"Cannot name a backup schema {backup!r}.")
        conn.execute(f'CREATE SCHEMA "{backup}"')
        for table in _TABLES:
            conn.execute(f'CREATE TABLE "{backup}".{table} AS TABLE {table}')
        conn.execute("TRUNCATE dextr_images, dextr_events")
        conn.execute("DELETE FROM dextr_meta")
        conn.execute("INSERT INTO dextr_meta (key, doc) VALUES (%s, %s)", (_META_ID, self._Jsonb(
            {"created_at": now, "reset_at": now, "reset_backup": backup})))
        tx.forget()
        return backup

    def backups(self) -> list[str]:
        """The backup schemas made by :meth:`reset`, oldest first."""
        with self._transactions.transaction() as tx:
            return [r[0] for r in tx.conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'dextr_backup_%%' "
                "ORDER BY nspname")]




class PostgresStore(Store):
    """The progress store in a PostgreSQL database at ``url``: :class:`~dextr_core.store.rules.Store`
    over a :class:`PostgresBackend`.

    Same keywords as :class:`~dextr_core.store.file_backend.ProgressStore` (``compact_bytes`` and
    ``recover_corrupt`` do not apply and are ignored), plus :class:`PostgresBackend`'s
    ``pool_size``, ``connect_timeout_s`` and ``lock_timeout_s``. :attr:`path` is the URL without
    its password.
    """

    def __init__(self, url: str, source_dir: str | os.PathLike, *,
                 clock: Callable[[], float] = time.time, recover_corrupt: bool = False,
                 compact_bytes: int | None = None, pool_size: int = 8,
                 connect_timeout_s: float = 10.0, lock_timeout_s: float = 30.0, **kwargs: Any):
        backend = PostgresBackend(url, clock=clock, pool_size=pool_size,
                                  connect_timeout_s=connect_timeout_s,
                                  lock_timeout_s=lock_timeout_s)
        super().__init__(backend, source_dir, clock=clock, **kwargs)
        self.backend: PostgresBackend = backend
        self.url = backend.url
        self.recovered_from: Path | None = None
        self.recovered_files: list[Path] = []

    def schema_version(self) -> int:
        """The schema version of the database (= :data:`SCHEMA_VERSION` once opened)."""
        return self.backend.schema_version()

    def backups(self) -> list[str]:
        """The backup schemas made by :meth:`reset`, oldest first."""
        return self.backend.backups()


# ---- moving a project from the file store ---------------------------------------------------------


def _comparable(store: Store) -> dict[str, Any]:
    return {"images": store.images(), "objects": store.objects(), "events": store.events(),
            "summary": store.summary()}


def copy_to_postgres(file: str | os.PathLike, url: str, source_dir: str | os.PathLike = ".",
                     *, replace: bool = False, clock: Callable[[], float] = time.time,
                     check: Callable[[PostgresStore], None] | None = None) -> dict[str, int]:
    """Copy the file store ``file`` into the database at ``url``, verified; return the counts.

    The file store's lock is held throughout (its servers wait, so the copy is one consistent
    moment). Everything is written in ONE database transaction, then read back inside it and
    compared with the file store: every image record, every object, every event and the
    summary must be equal, else nothing is committed and :class:`StoreInputError` says what
    differs. A database that already holds images or events is refused unless ``replace``
    (then its rows are replaced). ``check`` is called with the target store before the
    comparison (tests inject a fault there). Returns ``{"images", "objects", "events"}``.
    The file is never changed.
    """
    src_path = Path(file)
    if not src_path.is_file():
        raise StoreInputError(f"There is no progress store file {src_path}; give the path of "
                              "the project's .dextr_progress.json (admin.progress_file).")
    src = ProgressStore(src_path, source_dir, clock=clock)
    dst = PostgresStore(url, source_dir, clock=clock, pool_size=1)
    try:
        with src.backend.transaction():
            images = src.backend.all_images()
            events = src.backend.events()
            meta = src.backend.meta()
            backend = dst.backend
            with backend.transaction():
                backend.lock_for_maintenance()
                conn = backend._tx().conn
                n_images = conn.execute("SELECT count(*) FROM dextr_images").fetchone()[0]
                n_events = conn.execute("SELECT count(*) FROM dextr_events").fetchone()[0]
                if (n_images or n_events) and not replace:
                    raise StoreInputError(
                        f"The database {dst.path} already holds a progress store ({n_images} "
                        f"images, {n_events} events); nothing was copied. Copy into an empty "
                        "database, or pass --replace to overwrite it (its rows are lost)."
                    )
                conn.execute("TRUNCATE dextr_images, dextr_events")
                conn.execute("ALTER SEQUENCE dextr_events_seq_seq RESTART")
                backend.insert_images(images)
                with conn.cursor().copy("COPY dextr_events (time, action, image_id, annotator, "
                                        "detail) FROM STDIN") as out:
                    for e in events:
                        out.write_row((e.time, e.action, e.image_id, e.annotator,
                                       backend._Jsonb(e.detail)))
                conn.execute("DELETE FROM dextr_meta")
                conn.execute("INSERT INTO dextr_meta (key, doc) VALUES (%s, %s)",
                             (_META_ID, backend._Jsonb(dict(meta, copied_from=str(src_path)))))
                if check is not None:
                    check(dst)
                want, got = _comparable(src), _comparable(dst)
                different = [k for k in want if want[k] != got[k]]
                if different:
                    raise StoreInputError(
                        f"The copy in {dst.path} differs from {src_path} in its "
                        f"{', '.join(different)}; nothing was committed. Report this; the file "
                        "store is unchanged."
                    )
                counts = {"images": len(want["images"]), "objects": len(want["objects"]),
                          "events": len(want["events"])}
    finally:
        dst.close()
        src.close()
    return counts
