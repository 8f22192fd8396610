"""DEXTR annotator: Streamlit entry point.

Start it with ``streamlit run app.py`` (the bundled sample images, anno_cfg.yml) or with another
config: ``streamlit run app.py -- --config /path/to/anno_cfg.yml`` (or ``ANNO_CFG=...``).
This script runs on every interaction: it sets the page up, reads the config (a broken config
shows one error per problem and stops here), says in the sidebar which segmenter is active and
routes to the pages.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ui import state

APP_DIR = Path(__file__).resolve().parent

st.set_page_config(page_title="DEXTR annotator", page_icon=":material/touch_app:",
                   layout="wide")


def _page_list() -> list:
    return [
        st.Page(str(APP_DIR / "pages" / "annotate.py"), title="Annotate",
                icon=":material/touch_app:", default=True),
        st.Page(str(APP_DIR / "pages" / "progress.py"), title="Progress",
                icon=":material/monitoring:"),
    ]


def _engine_sidebar() -> None:
    from dextr_core.segmenters import DOWNLOAD_COMMAND

    cfg = state.config()
    engine = state.engine()
    seg = engine.segmenter
    with st.sidebar:
        if engine.weights_error:
            st.error(f"The DEXTR weights could not be loaded, so the fallback segmenter is "
                     f"used.\n\n{engine.weights_error}")
        if getattr(seg, "is_fallback", False):
            st.warning(
                f"**Fallback segmenter (GrabCut)**: no DEXTR weights at `{cfg.weights}`. "
                f"Masks are rougher. Run `{DOWNLOAD_COMMAND}` and restart the server.",
                icon=":material/warning:",
            )
        else:
            st.success(f"**{seg.name}** from `{cfg.weights}`", icon=":material/neurology:")
        st.caption(f"Config: `{cfg.path}`")


def main() -> None:
    """Read the config, show the engine, run the selected page."""
    state.app_has_run.set()
    state.config()  # a broken config shows its problems and stops here
    _engine_sidebar()
    st.navigation(_page_list()).run()


main()
