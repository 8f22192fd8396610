"""Process-wide resources shared by the pages: the config, the segmenter, the progress store.

Decoded photos live in :mod:`ui.photos`.

Streamlit runs every page script once per interaction; what is expensive or must be shared by all
annotators (the DEXTR network, the TinyDB store, decoded photos) is created once per server process
with ``st.cache_resource`` and handed out from here. Per-browser values (the annotator's name) live
in ``st.session_state``, the URL (``?annotator=NAME``) and a cookie.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from dextr_core import images
from dextr_core.config import AnnoConfig, ConfigError, load_config
from ui import cookies
from ui.photos import file_mtime

#: The repository root (the folder holding app.py and the default anno_cfg.yml).
APP_DIR = Path(__file__).resolve().parents[1]

#: Environment variable naming the config file when ``--config`` is not given.
CONFIG_ENV = "ANNO_CFG"

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
        cfg = _load_config(str(path), file_mtime(path))
    except ConfigError as exc:
        st.error(f"The config file **{exc.path}** cannot be used. Fix it and reload the page.")
        for problem in exc.problems:
            st.error(problem)
        st.stop()
        raise  # st.stop() raises; this line only reassures type checkers
    images.set_max_pixels(cfg.max_image_pixels)  # optional.max_image_megapixels, process-wide
    return cfg


# --------------------------------------------------------------------------------------------
# Segmenter


@dataclass(frozen=True)
class Engine:
    """The segmenter in use and, when a weights file exists but could not be loaded, why."""

    segmenter: object
    weights_error: str | None


@st.cache_resource(show_spinner="Loading the segmentation model...", max_entries=4)
def _load_engine(weights: str, threshold: float, model_server: str = "",
                 sam_prompt: str = "box+points") -> Engine:
    from dextr_core.segmenters import load_segmenter

    if model_server:  # the team's model service; the local engine while it does not answer
        from dextr_core.remote import load_remote_or_fallback

        choice = load_remote_or_fallback(
            model_server, lambda: _load_engine(weights, threshold, "", sam_prompt).segmenter,
            threshold=threshold)
        return Engine(choice.segmenter, None if choice.error is None else str(choice.error))
    try:
        return Engine(load_segmenter(weights, threshold=threshold, sam_prompt=sam_prompt), None)
    except Exception as exc:  # WeightsError (a broken file) and anything the model build raises
        from dextr_core.fallback import GrabCutSegmenter

        from_weights = type(exc).__name__ == "WeightsError"
        message = str(exc) if from_weights else f"{type(exc).__name__}: {exc}"
        return Engine(GrabCutSegmenter().warm_up(), message)


def prepare_photo(segmenter, load, path) -> None:
    """Start the segmenter's per-photo work for the photo at ``path`` in the background, where
    the segmenter has a ``prepare(image)`` hook (SAM: the image embedding, seconds on a CPU),
    so the first object on the photo costs only the prompt decoder. Returns at once; the page
    is not delayed (a click before it is done waits for the same computation, not a second
    one). ``load(path)`` gives the decoded photo; it is called here, in the page's thread (the
    page decodes the photo anyway, so it is a cache hit). Each photo is started once per
    segmenter."""
    prepare = getattr(segmenter, "prepare", None)
    if prepare is None or path is None:
        return
    key = (id(segmenter), str(path))
    with _PREPARING_LOCK:
        if key in _PREPARING:
            return
        _PREPARING[key] = True
        while len(_PREPARING) > 64:
            _PREPARING.pop(next(iter(_PREPARING)))

    try:
        image = load(path)
    except Exception:  # an unreadable photo is reported by the page itself
        _PREPARING.pop(key, None)
        return

    def work():
        try:
            prepare(image)
        except Exception:  # a failing model shows at the first click
            _PREPARING.pop(key, None)

    threading.Thread(target=work, name="prepare-photo", daemon=True).start()


_PREPARING: dict = {}
_PREPARING_LOCK = threading.Lock()


#: Session key: this browser session chose the local engine while the model service was down.
LOCAL_ENGINE_KEY = "engine_local"


def engine() -> Engine:
    """The process-wide :class:`Engine` for the current config (see :func:`segmenter`).

    With ``optional.model_server`` the model service (or, when it does not answer at start, the
    local engine with the service's message as ``weights_error``); a session that chose the local
    engine with :func:`use_local_engine` gets the local one.
    """
    cfg = config()
    server = "" if st.session_state.get(LOCAL_ENGINE_KEY) else cfg.model_server
    return _load_engine(str(cfg.weights), float(cfg.threshold), server, cfg.sam_prompt)


def use_local_engine() -> None:
    """This browser session runs the model in this server process from now on (the model
    service stopped answering)."""
    st.session_state[LOCAL_ENGINE_KEY] = True


def retry_model_service() -> None:
    """Ask the model service again: forget the engine choice made while it was down."""
    st.session_state.pop(LOCAL_ENGINE_KEY, None)
    _load_engine.clear()


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


def _new_store(cfg: AnnoConfig, **extra):
    from dextr_core.store import config_options, open_store

    return open_store(cfg.database or cfg.progress_file, cfg.source, **config_options(cfg),
                      **extra)


@st.cache_resource(show_spinner="Opening the progress store...", max_entries=4)
def _open_store(cfg_key: str, _cfg: AnnoConfig) -> StoreHandle:
    # Keyed on the config's repr (all its values); the config object itself is not hashed.
    cfg = _cfg
    store_ = _new_store(cfg)
    first_run = len(store_) == 0
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
        # the store's message names what is in use: the file, or the database (no password)
        st.error(f"The progress store cannot be opened: {exc}")
        st.stop()
        raise


def _offer_new_store(cfg: AnnoConfig) -> None:
    """The button that replaces a damaged progress store (kept aside) by a new one: a lead's
    decision; with no lead configured nobody can, and the page says how to configure one."""
    from ui import roles

    st.info("Only a lead can start a new progress store (the damaged files are kept aside as "
            "`*.corrupt-<time>`); annotation waits until then.")
    if not roles.lead_gate(st.container()):
        return
    if st.button("Start a new progress store (the damaged file is kept aside)"):
        fresh = _new_store(cfg, recover_corrupt=True)
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
    a lead resets or keeps the progress (:func:`lead_actions`: ``reset`` / ``keep_progress``).
    """
    return store_handle().store


def reset_pending() -> bool:
    """True while the config asks for a progress reset that nobody has confirmed or declined."""
    return store_handle().reset_pending


def lead_actions():
    """This run's :class:`dextr_core.leads.LeadActions` over the shared store: reopen, review,
    reset, scan, exports. The lead role (:mod:`ui.roles`) is asked at each action's call; a
    refusal says how to become a lead."""
    from dextr_core.leads import LeadActions
    from ui import roles

    return LeadActions(store_handle(), config(),
                       lead=lambda: roles.lead_name() if roles.is_lead() else None,
                       refusal=roles.needs_lead)


# --------------------------------------------------------------------------------------------
# Annotator


#: Query-parameter / session key of this tab's session token (set by the annotate page): a
#: refresh keeps the tab's claim, a new tab is another session.
TAB_KEY = "tab"

#: Cookie keeping the name for a new tab or a page opened without ``?annotator=``.
ANNOTATOR_COOKIE = "dextr_annotator"



def annotator() -> str | None:
    """The name this browser session gave, or None.

    Read from ``st.session_state``, else from the page address (``?annotator=NAME``), else
    from the cookie :data:`ANNOTATOR_COOKIE` (a new tab, a bookmark). After "Not you?"
    (:func:`set_annotator` with None) neither address nor cookie count until a name is given.
    """
    if ANNOTATOR_KEY in st.session_state:
        name = st.session_state[ANNOTATOR_KEY] or ""
    else:
        name = st.query_params.get(ANNOTATOR_KEY) or ""
        if not name.strip():
            name = cookies.read(ANNOTATOR_COOKIE) or ""
    name = name.strip()
    return name or None


def set_annotator(name: str | None) -> None:
    """Remember (or with None / "" forget) the annotator's name in the session and the URL;
    :func:`keep_annotator` brings the cookie in line on the next run."""
    name = (name or "").strip()
    st.session_state[ANNOTATOR_KEY] = name
    if name:
        st.query_params[ANNOTATOR_KEY] = name
    elif ANNOTATOR_KEY in st.query_params:
        del st.query_params[ANNOTATOR_KEY]


def annotation_session(key: str, name: str, load):
    """This tab's :class:`dextr_core.session.AnnotationSession` for annotator ``name``, kept in
    ``st.session_state[key]`` (made anew for another name) over the shared store and engine
    (both looked up again on every run: a reset store or a changed engine reaches it);
    ``load(path)`` decodes a photo (``ui.photos.full_image``)."""
    from dextr_core.session import AnnotationSession, SessionPaths

    token = tab_token()
    sess = st.session_state.get(key)
    if sess is None or sess.annotator != name:
        sess = AnnotationSession(store(), segmenter(), SessionPaths.from_config(config()), name,
                                 session=token, load=load)
        st.session_state[key] = sess
    sess.store, sess.segmenter = store(), segmenter()
    return sess


def tab_token() -> str:
    """This tab's session token, kept in the page address (``?tab=...``) so that a refresh of
    the tab keeps its claim, while a new tab (the address without it) is another session. A
    ``?tab=`` that is not 8-64 letters, digits, ``-`` or ``_`` (edited, cut off) gets a fresh
    one."""
    given = st.query_params.get(TAB_KEY) or ""
    given = given if re.fullmatch(r"[0-9A-Za-z_-]{8,64}", given) else ""
    token = st.session_state.get(TAB_KEY) or given or uuid.uuid4().hex
    st.session_state[TAB_KEY] = token
    if st.query_params.get(TAB_KEY) != token:
        st.query_params[TAB_KEY] = token
    return token


def keep_annotator() -> None:
    """Call on every page run (app.py): the name and the tab's token (:data:`TAB_KEY`) stay in
    the address on every page (the sidebar's page links drop them), so a refresh anywhere
    keeps both; the name also stays in the cookie. A forgotten name leaves address and cookie."""
    name = annotator()
    if name:
        st.session_state[ANNOTATOR_KEY] = name
        if st.query_params.get(ANNOTATOR_KEY) != name:
            st.query_params[ANNOTATOR_KEY] = name
    if st.session_state.get(TAB_KEY) or st.query_params.get(TAB_KEY):
        tab_token()
    cookies.keep({ANNOTATOR_COOKIE: name}, where=st.sidebar)
