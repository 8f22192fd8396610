"""Opening a progress store: :func:`open_store` picks the backend from the location.

A file path opens a :class:`~dextr_core.store.file_backend.ProgressStore` (TinyDB over a snapshot
and a journal), a ``postgresql://`` URL a :class:`~dextr_core.store.postgres.PostgresStore`; both
are the same :class:`~dextr_core.store.rules.Store` over another backend. The backend modules are
imported only when one is opened (PostgreSQL's driver only for a database).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .records import StoreInputError

if TYPE_CHECKING:
    from .rules import Store

__all__ = ["config_options", "open_store"]


def config_options(cfg: Any) -> dict[str, Any]:
    """The store's constructor keywords for an :class:`~dextr_core.config.AnnoConfig` (claim
    timeout, the folders and mask naming, labels, DEXTR-AnnoTool's progress file and the
    config's folder its paths are relative to)."""
    return {"claim_timeout_s": float(cfg.claim_timeout_min) * 60.0,
            "exclude_dirs": (cfg.destination,), "mask_suffix": cfg.mask_suffix,
            "save_format": cfg.save_format, "destination": cfg.destination,
            "labels": tuple(cfg.labels), "legacy_file": cfg.legacy_progress_file,
            "legacy_base": Path(cfg.path).parent}


def open_store(location: str | os.PathLike | None, source_dir: str | os.PathLike,
               **kwargs: Any) -> Store:
    """Open the progress store at ``location`` for the images of ``source_dir``.

    ``location`` is the snapshot file's path (``admin.database`` / ``admin.progress_file``) or a
    ``postgresql://user@host/db`` URL (:class:`~dextr_core.store.postgres.PostgresStore`); both
    are a :class:`~dextr_core.store.rules.Store`, the same rules over another backend
    (a file store is a :class:`~dextr_core.store.file_backend.ProgressStore`). The environment variable ``DEXTR_DATABASE_URL``, when set,
    overrides a file ``location`` (and is used when ``location`` is None), so every server of a
    deployment can be pointed at one database without editing configs. ``kwargs`` go to the
    store's constructor.
    """
    env = os.environ.get("DEXTR_DATABASE_URL", "").strip()
    text = os.fspath(location) if location is not None else ""
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    lost = re.match(r"(?i)(postgres(?:ql)?(?:\+\w+)?):/(?!/)", text)
    if lost and not isinstance(location, str):  # a URL passed as a Path lost one slash
        text = f"{lost.group(1)}://{text[lost.end():]}"
    if env and "://" not in text:
        text = env
    if not text:
        raise StoreInputError(
            "No progress store location: set admin.database (a file path or postgresql:// URL) "
            "or the environment variable DEXTR_DATABASE_URL."
        )
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme.startswith("postgresql+"):  # SQLAlchemy-style "postgresql+psycopg://"
        scheme, text = "postgresql", "postgresql://" + text.split("://", 1)[1]
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore(text, source_dir, **kwargs)
    if scheme:
        raise StoreInputError(
            f"admin.database {text!r} is a {scheme}:// address; the progress store is a file "
            "path (e.g. images/.dextr_progress.json) or a postgresql://user@host/database URL."
        )
    from .file_backend import ProgressStore

    return ProgressStore(text, source_dir, **kwargs)
