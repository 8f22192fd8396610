"""Streamlit glue shared by the pages: cached resources (:mod:`ui.resources`), decoded photos
(:mod:`ui.photos`), the message queue and ``md()``
(:mod:`ui.messages`), the annotate page's photo canvas and prompts (:mod:`ui.photo_canvas`,
:mod:`ui.prompts`), mask overlays (:mod:`ui.overlay`), canvas click mapping (:mod:`ui.canvas`)
and the lead role (:mod:`ui.roles`). ``dextr_core`` never imports from here."""
