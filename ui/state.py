"""Process-wide resources shared by the pages: the config, the segmenter, the progress store.

Streamlit runs every page script once per interaction; what is expensive or must be shared by all
annotators (the DEXTR network, the TinyDB store, decoded photos) is created once per server process
with ``st.cache_resource`` and handed out from here. Per-browser values (the annotator's name) live
in ``st.session_state`` and the URL (``?annotator=NAME``).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import streamlit as st

from dextr_core.config import AnnoConfig, ConfigError, load_config
from dextr_core.images import load_image

#: The repository root (the folder holding app.py and the default anno_cfg.yml).
APP_DIR = Path(__file__).resolve().parents[1]

#: Environment variable naming the config file when ``--config`` is not given.
CONFIG_ENV = "ANNO_CFG"

#: Largest size (width, height) in CSS pixels a photo is shown at on the annotate page.
DISPLAY_MAX = (900, 700)

#: Small photos are shown enlarged up to this factor (nearest pixels are easier to click).
MAX_UPSCALE = 2.0

#: Query-parameter / session key holding the annotator's name.
ANNOTATOR_KEY = "annotator"


#: Set by app.py on its first run in this server process (see :func:`run_through_app`).
app_has_run = threading.Event()


def run_through_app() -> None:
    """Call first in every page: make sure app.py (navigation, sidebar) is what runs the page.

    Because this project keeps its pages in ``pages/``, Streamlit starts each server process in
    its old multipage mode and stays there until app.py calls ``st.navigation``: when the first
    request of a fresh server is a page's own address (a lead's bookmark of ``/progress``), it
    runs that page file alone, with an automatic page list and no sidebar. Until app.py has run
    once in this process, this turns that mode off and reruns, so the same address is served
    through app.py like every later request. (Streamlit's AppTest switches the old mode back on
    before each of its runs; app.py has run by then, so its runs are left alone.)
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory and not app_has_run.is_set():
        PagesManager.uses_pages_directory = False
        st.rerun()


def config_path() -> Path:
    """The config file to use, as an absolute path.

    Order: ``--config FILE`` after ``--`` on the command line (``streamlit run app.py -- --config
    FILE``; unknown arguments are ignored), else the ``ANNO_CFG`` environment variable, else
    ``anno_cfg.yml`` next to app.py.
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--config")
    known, _ = parser.parse_known_args(sys.argv[1:])
    if known.config:
        return Path(os.path.expanduser(known.config)).absolute()
    env = os.environ.get(CONFIG_ENV, "").strip()
    if env:
        return Path(os.path.expanduser(env)).absolute()
    return APP_DIR / "anno_cfg.yml"


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0


@st.cache_resource(show_spinner=False, max_entries=8)
def _load_config(path: str, mtime: float) -> AnnoConfig:
    # Keyed on the file's mtime so that an edited config is read again at the next page load.
    del mtime
    return load_config(path)


def config() -> AnnoConfig:
    """The validated config of this server process (read once, re-read if the file changes).

    On a :class:`~dextr_core.config.ConfigError` it shows one ``st.error`` per problem (each names
    the key and the fix) and stops the script with ``st.stop()``: users never see a traceback.
    """
    path = config_path()
    try:
        return _load_config(str(path), _mtime(path))
    except ConfigError as exc:
        st.error(f"The config file **{exc.path}** cannot be used. Fix it and reload the page.")
        for problem in exc.problems:
            st.error(problem)
        st.stop()
        raise  # st.stop() raises; this line only reassures type checkers


# --------------------------------------------------------------------------------------------
# Segmenter


@dataclass(frozen=True)
class Engine:
    """The segmenter in use and, when a weights file exists but could not be loaded, why."""

    segmenter: object
    weights_error: str | None


@st.cache_resource(show_spinner="Loading the segmentation model...", max_entries=2)
def _load_engine(weights: str, threshold: float) -> Engine:
    from dextr_core.segmenters import load_segmenter

    try:
        return Engine(load_segmenter(weights, threshold=threshold), None)
    except Exception as exc:  # WeightsError (a broken file) and anything the model build raises
        from dextr_core.fallback import GrabCutSegmenter

        from_weights = type(exc).__name__ == "WeightsError"
        message = str(exc) if from_weights else f"{type(exc).__name__}: {exc}"
        return Engine(GrabCutSegmenter(), message)


def engine() -> Engine:
    """The process-wide :class:`Engine` for the current config (see :func:`segmenter`)."""
    cfg = config()
    return _load_engine(str(cfg.weights), float(cfg.threshold))


def segmenter():
    """The segmenter shared by all sessions of this server process (one model in memory).

    DEXTR when ``optional.weights`` exists and loads, else the GrabCut fallback. A weights file
    that exists but is broken does not stop the app: the fallback is used and
    :func:`engine` ``().weights_error`` holds the message to show.
    """
    return engine().segmenter


# --------------------------------------------------------------------------------------------
# Progress store


@dataclass
class StoreHandle:
    """The opened store plus what happened when it was opened (shown once on the pages)."""

    store: object
    sync_report: object | None
    reconciled: list
    reset_pending: bool
    lock: threading.Lock


@st.cache_resource(show_spinner="Opening the progress file...", max_entries=4)
def _open_store(cfg_key: str, _cfg: AnnoConfig) -> StoreHandle:
    # Keyed on the config's repr (all its values); the config object itself is not hashed.
    from dextr_core.store import ProgressStore

    cfg = _cfg

    first_run = not Path(cfg.progress_file).exists()
    store_ = ProgressStore(
        cfg.progress_file, cfg.source, claim_timeout_s=float(cfg.claim_timeout_min) * 60.0,
        exclude_dirs=(cfg.destination,),
    )
    report = store_.sync() if (cfg.update or first_run) else None
    reconciled = list(store_.reconcile(cfg.destination, cfg.mask_suffix, cfg.save_format) or [])
    return StoreHandle(store_, report, reconciled, bool(cfg.reset_progress) and not first_run,
                       threading.Lock())


def store_handle() -> StoreHandle:
    """The :class:`StoreHandle` of the current config (opened once per server process).

    A progress file that cannot be opened (damaged, unwritable) shows its message with
    ``st.error`` and stops the script; the file is left untouched. For a damaged file the page
    offers to start a new store (a lead's decision where the lead role is configured): the
    damaged files are kept aside as ``*.corrupt-<time>`` and the new store is rebuilt from the
    source folder, finished images being recognised by their mask files.
    """
    from dextr_core.errors import DextrError
    from dextr_core.store import StoreCorruptError

    cfg = config()
    try:
        return _open_store(repr(cfg), cfg)
    except StoreCorruptError as exc:
        st.error(str(exc))
        _offer_new_store(cfg)
        st.stop()
        raise
    except (DextrError, OSError) as exc:
        st.error(f"The progress file {cfg.progress_file} cannot be opened: {exc}")
        st.stop()
        raise


def _offer_new_store(cfg: AnnoConfig) -> None:
    """The button that replaces a damaged progress store (kept aside) by a new one."""
    from dextr_core.store import ProgressStore
    from ui import roles

    if roles.is_configured() and not roles.is_lead():
        st.info("A lead can start a new progress store here or on the Progress page; "
                "annotation waits until then.")
        return
    if st.button("Start a new progress store (the damaged file is kept aside)"):
        fresh = ProgressStore(cfg.progress_file, cfg.source, exclude_dirs=(cfg.destination,),
                              recover_corrupt=True)
        try:
            fresh.sync()
        finally:
            fresh.close()
        _open_store.clear()
        st.rerun()


def store():
    """The progress store shared by all sessions: opened once per process for the current config.

    At opening it is synced with the source folder when ``optional.update`` is true or the
    progress file is new, and reconciled with the mask files in the destination.
    ``admin.reset_progress: true`` never resets silently: :func:`reset_pending` stays true until
    someone confirms (:func:`confirm_reset`) or declines (:func:`decline_reset`) on the page.
    """
    return store_handle().store


def reset_pending() -> bool:
    """True while the config asks for a progress reset that nobody has confirmed or declined."""
    return store_handle().reset_pending


def confirm_reset() -> Path:
    """Reset the progress store (the store backs the old file up first); returns the backup path.

    The store is synced with the source folder again afterwards. Only once per process.
    """
    cfg = config()
    handle = store_handle()
    with handle.lock:
        if not handle.reset_pending:
            raise RuntimeError("no progress reset is pending")
        backup = handle.store.reset()
        handle.sync_report = handle.store.sync()
        handle.reconciled = list(
            handle.store.reconcile(cfg.destination, cfg.mask_suffix, cfg.save_format) or []
        )
        handle.reset_pending = False
    return Path(backup)


def decline_reset() -> None:
    """Keep the existing progress although the config says ``reset_progress: true``."""
    handle = store_handle()
    with handle.lock:
        handle.reset_pending = False


# --------------------------------------------------------------------------------------------
# Annotator


def annotator() -> str | None:
    """The name this browser session gave, or None.

    Read from ``st.session_state`` or, after a page refresh, from the URL (``?annotator=NAME``).
    """
    name = st.session_state.get(ANNOTATOR_KEY)
    if not name:
        name = st.query_params.get(ANNOTATOR_KEY)
    name = (name or "").strip()
    return name or None


def set_annotator(name: str | None) -> None:
    """Remember (or with None / "" forget) the annotator's name in the session and the URL."""
    name = (name or "").strip()
    if name:
        st.session_state[ANNOTATOR_KEY] = name
        st.query_params[ANNOTATOR_KEY] = name
    else:
        st.session_state.pop(ANNOTATOR_KEY, None)
        if ANNOTATOR_KEY in st.query_params:
            del st.query_params[ANNOTATOR_KEY]


# --------------------------------------------------------------------------------------------
# Photos: decoded once, shown downscaled


@dataclass(frozen=True)
class DisplayImage:
    """A photo prepared for the page.

    ``full_size``: (width, height) of the upright photo in pixels; ``image``: the display-size
    H x W x 3 uint8 RGB copy (see :func:`display_size_for`: at most :data:`DISPLAY_MAX`, small
    photos enlarged up to :data:`MAX_UPSCALE`); ``jpeg``: that copy encoded once, the canvas
    background when there is no overlay.
    """

    full_size: tuple[int, int]
    image: np.ndarray
    jpeg: bytes

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) of :attr:`image` in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])


def display_size_for(full_size: tuple[int, int], max_size: tuple[int, int] = DISPLAY_MAX,
                     max_upscale: float = MAX_UPSCALE) -> tuple[int, int]:
    """(width, height) in CSS pixels a photo of ``full_size`` (width, height) is shown at.

    It fits in ``max_size``, keeps its aspect ratio, and a small photo is enlarged by at most
    ``max_upscale`` (so that its objects are easy to click); at least 1 px each way.
    """
    width, height = full_size
    scale = min(max_upscale, max_size[0] / width, max_size[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an H x W x 3 uint8 RGB array (for canvas backgrounds)."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


#: Memory for decoded full-resolution photos shared by all sessions (MB; env ANNO_IMAGE_CACHE_MB).
FULL_IMAGE_CACHE_MB = float(os.environ.get("ANNO_IMAGE_CACHE_MB", "1500"))


class _ImageLRU:
    """Decoded photos by (path, mtime), least recently used dropped first once their total size
    passes the budget; the newest one is always kept (a 12000 x 9000 photo is 324 MB)."""

    def __init__(self, budget_bytes: float):
        self.budget = budget_bytes
        self.items: OrderedDict[tuple[str, float], np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, path: str, mtime: float) -> np.ndarray:
        key = (path, mtime)
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        image = load_image(path)  # outside the lock: other sessions keep going meanwhile
        image.setflags(write=False)
        with self.lock:
            self.items[key] = image
            self.items.move_to_end(key)
            while len(self.items) > 1 and sum(a.nbytes for a in self.items.values()) > self.budget:
                self.items.popitem(last=False)
        return image


@st.cache_resource(show_spinner=False)
def _image_lru() -> _ImageLRU:
    return _ImageLRU(FULL_IMAGE_CACHE_MB * 1024 * 1024)


def _full_image(path: str, mtime: float) -> np.ndarray:
    return _image_lru().get(path, mtime)


def full_image(path: str | os.PathLike) -> np.ndarray:
    """The upright full-resolution photo (H x W x 3 uint8 RGB, read-only), decoded once.

    Photos are kept for all sessions within :data:`FULL_IMAGE_CACHE_MB` (least recently used
    dropped first; the newest is always kept). Raises
    :class:`~dextr_core.images.ImageReadError` for unreadable files.
    """
    p = Path(path)
    return _full_image(str(p), _mtime(p))


@st.cache_resource(show_spinner=False, max_entries=64)
def _display_image(path: str, mtime: float) -> DisplayImage:
    full = _full_image(path, mtime)
    height, width = full.shape[:2]
    size = display_size_for((width, height))
    if size == (width, height):
        small = np.ascontiguousarray(full)
    elif size[0] > width:
        small = cv2.resize(full, size, interpolation=cv2.INTER_CUBIC)
    else:
        small = cv2.resize(full, size, interpolation=cv2.INTER_AREA)
    small.setflags(write=False)
    return DisplayImage((width, height), small, encode_jpeg(small))


def display_image(path: str | os.PathLike) -> DisplayImage:
    """The :class:`DisplayImage` of a photo, made once per file version (path + mtime).

    Raises :class:`~dextr_core.images.ImageReadError` for unreadable files.
    """
    p = Path(path)
    return _display_image(str(p), _mtime(p))
