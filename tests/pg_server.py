"""A throwaway PostgreSQL server for the store tests, and the fixtures that run a test on both
store backends.

``pg_server`` (session scope) runs Debian's server binaries (``initdb``/``pg_ctl`` under
``/usr/lib/postgresql/*/bin``, or ``$PG_BIN``, or on ``PATH``): ``initdb`` into a temp folder,
``pg_ctl start`` listening only on a Unix socket in that folder (no TCP port), stopped and removed
at the end of the session. As root, the server runs as the ``postgres`` user (``runuser``), since
PostgreSQL refuses to run as root. ``fsync=off``: this server holds test data only (a killed
CLIENT is what the tests kill; the server keeps running). Tests that need it skip, with the reason,
only where no server binary or the driver is installed (``scripts/setup_services.sh`` installs
both).

``pg_url`` gives each test a fresh, empty database (dropped afterwards). ``store_backend`` is
``"tinydb"`` or ``"postgresql"`` (a parametrised fixture), ``store_location`` the matching location
for :func:`dextr_core.store.open_store` (a file under ``tmp_path``, or a fresh database's URL).

tests/conftest.py imports the four fixtures, so every test module has them; a module imports
only the decorator :data:`tinydb_only` (``from pg_server import tinydb_only``).
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

SETUP_HINT = "run scripts/setup_services.sh (apt-get install postgresql; pip install psycopg)"


def _find_bin(name: str) -> str | None:
    env = os.environ.get("PG_BIN")
    if env and os.path.exists(os.path.join(env, name)):
        return os.path.join(env, name)
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return found[-1]
    return shutil.which(name)


class PgServer:
    """A running throwaway server: :attr:`url` of its ``postgres`` database, :meth:`new_db`."""

    def __init__(self, durable: bool = False) -> None:
        """``durable=True`` keeps PostgreSQL's default fsync / synchronous_commit (benchmarks)."""
        initdb, self.pg_ctl = _find_bin("initdb"), _find_bin("pg_ctl")
        if initdb is None or self.pg_ctl is None:
            pytest.skip(f"PostgreSQL server binaries (initdb, pg_ctl) are not installed; {SETUP_HINT}")
        try:
            import psycopg  # noqa: F401
            import psycopg_pool  # noqa: F401
        except ImportError as exc:
            pytest.skip(f"the PostgreSQL driver is not installed ({exc}); {SETUP_HINT}")
        self.prefix: list[str] = []
        self.folder = Path(tempfile.mkdtemp(prefix="dextr-pg-"))
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip(f"running as root and there is no 'postgres' user; {SETUP_HINT}")
            self.prefix = ["runuser", "-u", "postgres", "--"]
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)
        os.chmod(self.folder, 0o700)
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._run([initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                   "--no-locale", "--no-sync"])
        options = f"-k {self.folder} -c listen_addresses='' -c max_connections=200"
        if not durable:
            options += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                   "-o", options, "start"])
        self.url = f"postgresql://postgres@/postgres?host={self.folder}"

    def _run(self, cmd: list[str]) -> None:
        done = subprocess.run(self.prefix + cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr}\n{log}")

    def url_of(self, db: str) -> str:
        return f"postgresql://postgres@/{db}?host={self.folder}"

    def new_db(self) -> str:
        """A fresh, empty database; returns its name."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def drop_db(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        try:
            self._run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


_SERVER: list[PgServer] = []


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL server for this test session (skips if none can run here).

    One server per process (also where a module registers this fixture again): it is started
    once and stopped when Python exits.
    """
    if not _SERVER:
        _SERVER.append(PgServer())
        atexit.register(_SERVER[0].stop)
    return _SERVER[0]


@pytest.fixture
def pg_url(pg_server) -> str:
    """The URL of a fresh, empty database on the throwaway server (dropped after the test)."""
    name = pg_server.new_db()
    yield pg_server.url_of(name)
    pg_server.drop_db(name)


@pytest.fixture(params=["tinydb", "postgresql"])
def store_backend(request) -> str:
    """Which store backend a test runs on: each test using it runs once per backend."""
    return request.param


@pytest.fixture
def store_location(store_backend, request, tmp_path) -> str | Path:
    """A location for ``open_store``: ``tmp_path/progress.json`` or a fresh database URL."""
    if store_backend == "tinydb":
        return tmp_path / "progress.json"
    return request.getfixturevalue("pg_url")


#: Decorator for a test that uses ``store``/``store_location`` but checks the file store's files:
#: it runs on TinyDB only (direct parametrisation overrides the ``store_backend`` fixture).
tinydb_only = pytest.mark.parametrize("store_backend", ["tinydb"])
