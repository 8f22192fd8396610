"""dextr_core/cuts.py: the pixels a later object cut, as a record keeps them, and an object's
mask rebuilt from its record (model mask, strokes and cuts in order)."""

from __future__ import annotations

import numpy as np
import pytest

from dextr_core.cuts import Cut, cut_problem, cuts_from_docs, rebuild_mask
from dextr_core.strokes import Stroke

H, W = 20, 30


def _rect(y0, y1, x0, x1) -> np.ndarray:
    out = np.zeros((H, W), bool)
    out[y0:y1, x0:x1] = True
    return out


def test_a_cut_keeps_its_pixels_exactly_through_its_stored_document():
    removed = _rect(2, 9, 4, 11) & ~_rect(4, 6, 6, 8)  # with a hole
    cut = Cut.of(removed, after=2, by="abc")
    (back,) = cuts_from_docs([cut.to_doc()])
    assert back == cut and (back.by, back.after, back.size) == ("abc", 2, (H, W))
    np.testing.assert_array_equal(back.mask((H, W)), removed)
    assert back.mask((H + 1, W)) is None  # the photo was replaced by one of another size


def test_a_rebuild_applies_strokes_and_cuts_in_the_order_they_were_made():
    model = _rect(0, 10, 0, 10)
    paint = Stroke("paint", 3, [(5, 5)])  # paints back pixels the first cut removed
    first = Cut.of(model & _rect(3, 8, 3, 8), after=0)
    second = Cut.of(model & _rect(0, 2, 0, 10), after=1)
    mask = rebuild_mask(model, [paint], [second, first], (H, W))
    expected = model & ~_rect(3, 8, 3, 8)
    expected[4:7, 4:7] = True  # the paint stroke (a disc of radius 1.5 around (5, 5))
    expected &= ~_rect(0, 2, 0, 10)
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(rebuild_mask(None, [], [first], (H, W)), np.zeros((H, W), bool))


@pytest.mark.parametrize("doc, words", [
    ("cut", "not a document"),
    ({"size": [H], "counts": "0"}, "size"),
    ({"size": [H, W], "counts": ""}, "counts"),
    ({"size": [H, W], "counts": "a b"}, "counts"),
    ({"size": [H, W], "counts": "0", "after": -1}, "after"),
    ({"size": [H, W], "counts": "0", "by": "../x"}, "by"),
])
def test_a_document_that_is_not_a_cut_is_refused_with_the_reason(doc, words):
    assert words in cut_problem(doc)
    with pytest.raises(ValueError, match=words):
        Cut.from_doc(doc)
