"""The leads' page's Export section (anyone may export; replacing an existing export needs the
lead role, :func:`dextr_core.leads.export_target`): format and images, an Export button with a
progress bar, what was written, a download. The export itself is
:meth:`dextr_core.leads.LeadActions.export` (nothing is left half-written).
"""

from __future__ import annotations

import streamlit as st

from dextr_core.errors import DextrError
from dextr_core.leads import LeadActions
from ui import messages
from ui.messages import md

#: Export formats offered on the page and what they are called there (see
#: dextr_core.leads.EXPORT_CALLS).
EXPORT_FORMATS = {"coco": "COCO instances JSON (RLE masks)",
                  "coco-polygon": "COCO instances JSON (polygons)",
                  "yolo": "YOLO segmentation (Ultralytics)",
                  "voc": "Pascal VOC segmentation",
                  "masks": "Label maps (DEXTR-AnnoTool layout)",
                  "palette": "Colour previews (palette PNG)"}
#: Which images an export takes (run_export's ``status``).
EXPORT_SCOPES = {"done": "finished (done)", "approved": "approved in review",
                 "all": "every image with a mask file"}


#: Session key: the last export's ExportResult (its summary and download stay over reruns).
RESULT_KEY = "export_result"
#: Warnings listed under an export; the rest are counted.
SHOWN_WARNINGS = 20


def show_exports(leads: LeadActions, lead: bool) -> None:
    """Format + images choice, an Export button with a progress bar, a download. ``lead``:
    whether the caller may replace an existing export (else told where theirs goes)."""
    st.header("Export")
    c1, c2 = st.columns(2)
    fmt = c1.selectbox("Format", list(EXPORT_FORMATS), key="export_format",
                       format_func=EXPORT_FORMATS.get)
    status = c2.selectbox("Images", list(EXPORT_SCOPES), key="export_status",
                          format_func=EXPORT_SCOPES.get)
    if not lead:
        st.info("Your export is written next to any existing one, with the time in its name; "
                "replacing an export needs the lead role (sign in in the sidebar).")
    if st.button("Export", key="export_run", type="primary"):
        messages.clear()
        bar = st.progress(0.0, text="Exporting...")

        def progress(done: int, total: int) -> None:
            if done == total or done % 50 == 0:
                bar.progress(done / total if total else 1.0,
                             text=f"Exporting: {done:,} of {total:,} images")

        try:
            result = leads.export(fmt, status, progress)  # the role is checked at the click
        except (DextrError, OSError) as exc:  # ExportError, StoreCorruptError, a full disk
            st.error(f"Export failed: {md(exc)}")
        else:
            bar.progress(1.0, text="Export written")
            st.session_state[RESULT_KEY] = result
    result = st.session_state.get(RESULT_KEY)
    download = leads.download(result) if result is not None else None
    if download is not None:
        _written(result, *download)


def _written(result, name: str, data) -> None:
    """What the export wrote (images, objects, shared pixels, warnings) and its download
    button (``data``: a reader of the zip's bytes, read when the lead downloads)."""
    extra = "".join(f", {n:,} objects {what}" for what, n in result.counts.items() if n)
    st.success(f"Wrote {md(result.path)}: {result.images:,} images, {result.objects:,} "
               f"objects{extra}.")
    if result.shared_pixels:
        st.info(f"{result.shared_pixels:,} pixels are shared by overlapping objects in "
                f"{result.overlapping_images:,} image(s): each object keeps them in COCO; "
                "label maps give them to the later object.")
    for warning in result.warnings[:SHOWN_WARNINGS]:
        st.warning(md(warning))
    if len(result.warnings) > SHOWN_WARNINGS:
        st.caption(f"... and {len(result.warnings) - SHOWN_WARNINGS} more warnings.")
    st.download_button(f"Download {md(name)}", data=data, file_name=name,
                       mime="application/zip", key="export_download", on_click="ignore")
