"""On-disk cache of the DEXTR network exported to OpenVINO, so that a server restart skips the export.

Exporting the Keras network to OpenVINO's IR (``dextr.xml`` + ``dextr.bin``, ~12 s on two cores)
and checking it against Keras (~5 s) are most of a :class:`~dextr_core.segmenters.DextrSegmenter`'s
start-up. The IR depends only on the weights file's bytes, the network's code and the Keras and
OpenVINO versions, so an IR that passed the check is kept under a key made of exactly those; a
later start with the same key compiles it directly and skips both. :mod:`dextr_core.sam` keeps
its converted image encoder (``sam_encoder.xml`` / ``.bin``) the same way, under a key made by
:func:`key_for` from its own code and versions.

The same entry keeps the precision decisions of :mod:`dextr_core.precision`
(``precision-<tag>.json``, one per runtime, device and threshold), so a reduced precision is
checked again whenever the weights or the versions change, and only then.

The cache lives in ``$DEXTR_CACHE_DIR`` if that is set (an empty value turns the cache off), else
``$XDG_CACHE_HOME/dextr-annotool`` or ``~/.cache/dextr-annotool``. One entry is ~200 MB; deleting
the folder is always safe. A cache that cannot be written costs a warning, nothing else.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path

__all__ = [
    "IR_FILES",
    "cache_dir",
    "cache_key",
    "decision_tag",
    "discard",
    "key_for",
    "lookup",
    "lookup_decision",
    "store",
    "store_decision",
]

#: The files of one cached IR.
IR_FILES = ("dextr.xml", "dextr.bin")


def cache_dir() -> Path | None:
    """The folder holding the cached IRs (``openvino/`` of the cache), or None when turned off."""
    configured = os.environ.get("DEXTR_CACHE_DIR")
    if configured is not None:
        return Path(configured).expanduser() / "openvino" if configured.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dextr-annotool" / "openvino"


def cache_key(weights_path: str | os.PathLike) -> str:
    """Hex key of the IR for this weights file: SHA-256 over the file's bytes, the network code
    (``network.py``) and the Keras and OpenVINO versions ("none" where OpenVINO is not
    installed, as on a GPU machine). Reads the whole file (~0.3 s)."""
    import keras

    try:
        openvino_version = importlib.import_module("openvino").__version__
    except ImportError:
        openvino_version = "none"
    return key_for(
        weights_path,
        code=[Path(__file__).parent / "network.py"],
        versions=f"keras {keras.__version__} openvino {openvino_version}",
    )


def key_for(weights_path: str | os.PathLike, code: list[Path], versions) -> str:
    """Hex key over a weights file's bytes, the source files ``code`` (the network's code) and
    ``versions`` (text, or a mapping of package -> version). Any change of one gives a new key."""
    digest = hashlib.sha256()
    with open(weights_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    for path in code:
        digest.update(Path(path).read_bytes())
    if not isinstance(versions, str):
        versions = json.dumps(versions, sort_keys=True)
    digest.update(versions.encode())
    return digest.hexdigest()[:32]


def lookup(key: str, files: tuple[str, ...] = IR_FILES) -> Path | None:
    """The cached IR's xml (``files[0]``, default ``dextr.xml``) for ``key`` if its entry holds
    all ``files``, else None."""
    root = cache_dir()
    if root is None:
        return None
    entry = root / key
    return entry / files[0] if all((entry / name).is_file() for name in files) else None


def store(key: str, folder: Path, files: tuple[str, ...] = IR_FILES) -> Path | None:
    """Copy the IR ``files`` in ``folder`` into the cache under ``key``; returns the entry or
    None.

    The entry appears whole or not at all (copied into a temporary folder, then renamed), so a
    second server process exporting at the same time, or a crash, never leaves half an IR.
    """
    root = cache_dir()
    if root is None:
        return None
    entry = root / key
    temporary = root / f".{key}.{uuid.uuid4().hex}.tmp"
    try:
        temporary.mkdir(parents=True)
        for name in files:
            shutil.copyfile(folder / name, temporary / name)
        try:
            temporary.rename(entry)
        except OSError:
            if lookup(key, files) is None:  # not another process's complete copy but a broken entry
                shutil.rmtree(entry, ignore_errors=True)
                temporary.rename(entry)
        return entry
    except OSError as exc:
        warnings.warn(
            f"Could not keep the OpenVINO export in {root} ({exc}); the next start exports "
            "again. Set DEXTR_CACHE_DIR to a writable folder, or to an empty value to turn this "
            "cache off.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def discard(key: str) -> None:
    """Remove the entry for ``key`` (for example one that no longer compiles)."""
    root = cache_dir()
    if root is not None:
        shutil.rmtree(root / key, ignore_errors=True)


def decision_tag(**facts) -> str:
    """A short stable name for what a precision decision depends on besides the weights
    (runtime, device name, threshold, framework versions...): ``facts`` hashed in key order."""
    text = json.dumps(facts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _decision_path(key: str, tag: str) -> Path | None:
    root = cache_dir()
    return None if root is None else root / key / f"precision-{tag}.json"


def lookup_decision(key: str, tag: str) -> dict | None:
    """The precision decision stored for ``key`` and ``tag`` (:func:`store_decision`), or None
    when there is none or it cannot be read (then it is simply made again)."""
    path = _decision_path(key, tag)
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data.get("decision") if isinstance(data, dict) else None


def store_decision(key: str, tag: str, decision: dict, facts: dict | None = None) -> Path | None:
    """Keep ``decision`` (JSON-able) for ``key`` and ``tag``, with ``facts`` written beside it for
    people reading the file. Written atomically; a cache that cannot be written costs a warning
    (the decision is made again at the next start). Returns the file or None."""
    from .masks import atomic_write

    path = _decision_path(key, tag)
    if path is None:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"decision": decision, "facts": facts or {}}
        atomic_write(path, json.dumps(body, indent=1, sort_keys=True).encode())
        return path
    except OSError as exc:
        warnings.warn(
            f"Could not keep the precision decision in {path.parent} ({exc}); the next start "
            "checks the precision again. Set DEXTR_CACHE_DIR to a writable folder.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
