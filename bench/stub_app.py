"""app.py with the segmenter replaced by a stub that returns a fixed disc mask at once.

For bench/bench_browser.py: ``streamlit run bench/stub_app.py -- --config CFG`` serves the real
app (pages, canvas, overlay, transfer), only the model's forward is taken out, so the time from
the fourth click to the overlay is the app's own part. Not for annotating.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ui.resources as resources  # noqa: E402


class StubSegmenter:
    """A disc a quarter of the photo's short side in radius, centred (made once per size)."""

    name = "stub"
    is_fallback = False

    def __init__(self):
        self._masks: dict[tuple[int, int], np.ndarray] = {}

    def segment(self, image, points):
        height, width = image.shape[:2]
        if (height, width) not in self._masks:
            yy, xx = np.ogrid[:height, :width]
            r = min(width, height) // 4
            self._masks[(height, width)] = (xx - width // 2) ** 2 + (yy - height // 2) ** 2 <= r * r
        return self._masks[(height, width)].copy()

    def predict(self, image, points):
        return self.segment(image, points).astype(np.float32)


_STUB = resources.Engine(StubSegmenter(), None)
resources.engine = lambda: _STUB

runpy.run_path(str(REPO / "app.py"), run_name="__main__")
