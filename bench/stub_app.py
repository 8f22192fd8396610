"""app.py with the segmenter replaced by a stub that returns a fixed disc mask at once.

For bench/bench_browser.py: ``streamlit run bench/stub_app.py -- --config CFG`` serves the real
app (pages, canvas, overlay, transfer), only the model's forward is taken out, so the time from
the fourth click to the overlay is the app's own part. Not for annotating.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ui.resources as resources  # noqa: E402
from bench.bench_app import StubSegmenter  # noqa: E402  (the one stub, shared with bench_app)

_STUB = resources.Engine(StubSegmenter(), None)
resources.engine = lambda: _STUB

runpy.run_path(str(REPO / "app.py"), run_name="__main__")
