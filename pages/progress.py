"""The leads' page: how far the team is, who did what, review, the finished masks, exports and
resets.

Run through app.py's ``st.navigation``. Everyone may look and export; reviewing, reopening or
sending back images, replacing an existing export and resets need the lead role (ui/roles.py,
docs/roles.md): with no lead configured nobody can, and the page says how to configure one.

Layout only: each section is a ui module (ui/progress_figures.py, ui/review_panel.py,
ui/gallery.py, ui/export_panel.py, ui/reset_panel.py) whose actions are
:class:`dextr_core.leads.LeadActions` calls (the role is checked at the call; the outcome says
what took effect). An error of the store is shown with its message where the section would be;
the page keeps running.
"""

from __future__ import annotations

import streamlit as st

from ui import messages, resources, roles
from ui.export_panel import show_exports
from ui.gallery import show_gallery
from ui.progress_figures import show_figures
from ui.reset_panel import show_last_scan, show_reset
from ui.review_panel import show_review


def main() -> None:
    """Render the progress page."""
    resources.run_through_app()
    cfg = resources.config()
    messages.set_page("progress")
    st.title("Progress")
    leads = resources.lead_actions()  # a damaged store: its message, and a lead's offer of a new one
    lead = roles.lead_gate()
    messages.show()
    show_last_scan(leads)
    show_figures(tuple(cfg.labels))
    show_review(leads, cfg, lead)
    show_gallery(cfg, lead)
    show_exports(leads, lead)
    show_reset(leads, cfg, lead)


if __name__ == "__main__":  # Streamlit runs pages as __main__
    main()
