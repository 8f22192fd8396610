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

from ui import resources
from ui.messages import md

APP_DIR = Path(__file__).resolve().parent

# The tab icon is a file the app serves itself: an emoji or a Material icon there would make the
# browser fetch a font or an image from the internet, which an internal network does not reach.
st.set_page_config(page_title="DEXTR annotator", page_icon=str(APP_DIR / "ui" / "icon.png"),
                   layout="wide")


def _page_list() -> list:
    return [
        st.Page(str(APP_DIR / "pages" / "annotate.py"), title="Annotate",
                icon=":material/touch_app:", default=True),
        st.Page(str(APP_DIR / "pages" / "progress.py"), title="Progress",
                icon=":material/monitoring:"),
    ]


def _install_command(weights) -> str:
    """The exact shell command that puts the DEXTR weights where this server looks."""
    from dextr_core import download

    return download.install_command(weights)


def _engine_sidebar() -> None:
    cfg = resources.config()
    engine = resources.engine()
    seg = engine.segmenter
    with st.sidebar:
        if engine.weights_error and cfg.model_server:
            st.error("The model service does not answer, so this server runs the model "
                     f"itself.\n\n{md(engine.weights_error)}")
            st.button("Ask the model service again", on_click=resources.retry_model_service)
        elif engine.weights_error:
            st.error("The DEXTR weights could not be loaded, so the fallback segmenter is "
                     f"used.\n\n{md(engine.weights_error)}")
        elif cfg.model_server and not seg.is_remote:
            st.info("This session runs the model in this server (the model service was down).")
            st.button("Ask the model service again", on_click=resources.retry_model_service)
        if seg.is_fallback:
            st.warning(f"**Fallback segmenter (GrabCut)**: no DEXTR weights at "
                       f"{md(cfg.weights)}. Masks are rougher. Run this and restart the server:",
                       icon=":material/warning:")
            st.code(_install_command(cfg.weights), language="bash")
        else:
            st.success(f"**{md(seg.name)}** from {md(cfg.weights)}", icon=":material/neurology:")
            info = getattr(seg, "runtime_info", "")
            if info:
                st.caption(md(info))
        st.caption(f"Config: {md(cfg.path)}")
        for warning in cfg.warnings:
            st.warning(md(warning))


def main() -> None:
    """Read the config, show the engine, run the selected page."""
    resources.app_has_run.set()
    resources.config()  # a broken config shows its problems and stops here
    resources.keep_annotator()
    _engine_sidebar()
    st.navigation(_page_list()).run()


main()
