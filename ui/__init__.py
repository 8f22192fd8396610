"""Streamlit glue shared by the pages: cached resources and session values (:mod:`ui.state`),
mask overlays (:mod:`ui.overlay`), canvas click mapping (:mod:`ui.canvas`) and the lead role
(:mod:`ui.roles`). ``dextr_core`` never imports from here."""
