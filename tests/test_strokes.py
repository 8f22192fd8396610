"""Brush strokes (dextr_core/strokes.py): footprints against masks drawn by hand here, clipping,
the canvas -> image scale, and an object's mask = the model's mask + its strokes."""

from __future__ import annotations

import numpy as np
import pytest

from dextr_core.strokes import (
    Stroke,
    apply_strokes,
    canvas_stroke,
    canvas_to_image_xy,
    footprint,
    image_to_canvas_xy,
    stroke_problem,
)


def pic(text: str) -> np.ndarray:
    """A bool mask from a picture: '#' set, '.' clear, one line per row."""
    rows = [line.strip() for line in text.strip().splitlines()]
    return np.array([[c == "#" for c in row] for row in rows], dtype=bool)


def test_a_dot_is_a_disc_of_the_brush_width():
    expected = pic("""
        .........
        .........
        ...###...
        ..#####..
        ..#####..
        ..#####..
        ...###...
        .........
        """)
    got = footprint(Stroke("paint", 5, [(4, 4)]), (8, 9))
    np.testing.assert_array_equal(got, expected)


def test_a_line_has_the_brush_width_and_round_caps():
    expected = pic("""
        ............
        ............
        .#########..
        .#########..
        .#########..
        ............
        """)
    # width 3 from x=2 to x=8 on row 3: rows 2..4; the caps reach one pixel past each end
    # (distance 1 <= 1.5, and the corners at sqrt(2) <= 1.5), not two (distance 2).
    got = footprint(Stroke("paint", 3, [(2, 3), (8, 3)]), (6, 12))
    np.testing.assert_array_equal(got, expected)


def test_a_wide_cap_is_round_not_square():
    got = footprint(Stroke("paint", 9, [(10, 10), (20, 10)]), (21, 31))
    radius = 4.5
    assert got[10, 10 - 4] and not got[10, 10 - 5]  # the cap reaches 4 px left of the end
    assert got[10 - 4, 10] and not got[10 - 5, 10]  # the band 4 px up
    assert not got[10 - 4, 10 - 4]  # the box's corner lies outside the round cap
    assert got[10 - 3, 10 - 3]  # (3, 3) is 4.24 px from the end: inside
    yy, xx = np.mgrid[0:21, 0:31]
    dist = np.where(xx < 10, np.hypot(xx - 10, yy - 10),
                    np.where(xx > 20, np.hypot(xx - 20, yy - 10), np.abs(yy - 10)))
    np.testing.assert_array_equal(got, dist <= radius)


def test_a_diagonal_stroke_covers_the_pixels_within_half_its_width():
    a, b = np.array([3.0, 4.0]), np.array([40.0, 33.0])
    got = footprint(Stroke("erase", 6, [tuple(a), tuple(b)]), (40, 50))
    yy, xx = np.mgrid[0:40, 0:50]
    p = np.stack([xx, yy], axis=-1).astype(float)
    t = np.clip(((p - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
    dist = np.linalg.norm(p - (a + t[..., None] * (b - a)), axis=-1)
    np.testing.assert_array_equal(got, dist <= 3.0)


def test_a_stroke_is_clipped_at_the_border():
    expected = pic("""
        ###...
        ###...
        ##....
        ......
        """)
    got = footprint(Stroke("paint", 5, [(0, 0)]), (4, 6))  # the quarter of the dot's disc
    np.testing.assert_array_equal(got, expected)
    outside = Stroke("paint", 4, [(-50, -50), (-10, -30)])
    assert not footprint(outside, (4, 6)).any()
    across = footprint(Stroke("paint", 1, [(-5, 2), (20, 2)]), (4, 6))
    np.testing.assert_array_equal(across, pic("......\n......\n######\n......"))


def test_canvas_positions_map_to_image_pixels_and_back():
    # a canvas half the image's size: canvas px 2.5 is the centre of image pixel 4
    np.testing.assert_allclose(canvas_to_image_xy([[2.5, 3.0]], (0.5, 0.5)), [[4.5, 5.5]])
    # a zoomed view: 4 canvas px per image px, the canvas's left/top edge at image (10, 20)
    np.testing.assert_allclose(canvas_to_image_xy([[2.0, 6.0]], (4, 4), (10, 20)), [[10.0, 21.0]])
    pts = np.array([[0.0, 0.0], [13.7, 99.1], [640, 480]])
    for scale, origin in (((0.2, 0.2), (0, 0)), ((4, 4), (10, 20)), ((0.25, 0.2503), (3, 7))):
        back = image_to_canvas_xy(canvas_to_image_xy(pts, scale, origin), scale, origin)
        np.testing.assert_allclose(back, pts, atol=1e-9)


def test_a_canvas_stroke_has_its_width_and_points_in_image_pixels():
    s = canvas_stroke("paint", [[10, 10], [10, 10], [30, 10]], 8, (0.25, 0.25))
    assert s.mode == "paint" and s.width == 32.0
    assert s.points == ((39.5, 39.5), (119.5, 39.5))  # the repeated point is dropped
    zoomed = canvas_stroke("erase", [[0, 0]], 8, (4, 4), origin=(100, 50))
    assert zoomed.width == 2.0 and zoomed.points == ((99.5, 49.5),)
    assert canvas_stroke("paint", [[1, 1]], 0.1, (4, 4)).width == 1.0  # never under 1 px


def test_paint_adds_erase_removes_and_nothing_else_moves():
    model = pic("""
        ..........
        .######...
        .######...
        .######...
        .######...
        ..........
        """)
    paint = Stroke("paint", 1, [(7, 2), (9, 2)])
    erase = Stroke("erase", 1, [(3, 0), (3, 5)])
    expected = pic("""
        ..........
        .##.###...
        .##.######
        .##.###...
        .##.###...
        ..........
        """)
    got = apply_strokes(model, [paint, erase])
    np.testing.assert_array_equal(got, expected)
    assert model[1, 3], "the model's mask itself is not changed"
    # the order counts: painting over an erased line brings it back
    np.testing.assert_array_equal(apply_strokes(model, [erase, Stroke("paint", 1, [(3, 0),
                                                                                  (3, 5)])]),
                                  model | pic("...#......\n" * 2 + "..........\n" * 2
                                              + "...#......\n" * 2))


def test_a_mask_painted_from_nothing():
    got = apply_strokes(None, [Stroke("paint", 3, [(2, 2)])], shape=(5, 5))
    np.testing.assert_array_equal(got, pic(".....\n.###.\n.###.\n.###.\n....."))


def test_strokes_go_to_documents_and_back_and_bad_ones_are_refused():
    s = Stroke("erase", 12.345, [(1.234, 5.678), (9, 10)])
    doc = s.to_doc()
    assert doc == {"mode": "erase", "width": 12.35, "points": [[1.23, 5.68], [9.0, 10.0]]}
    assert Stroke.from_doc(doc) == Stroke("erase", 12.35, [(1.23, 5.68), (9, 10)])
    assert stroke_problem(doc) is None
    for bad in ({"mode": "fill", "width": 3, "points": [[1, 1]]},
                {"mode": "paint", "width": 0, "points": [[1, 1]]},
                {"mode": "paint", "width": 3, "points": []},
                {"mode": "paint", "width": 3, "points": [[1, float("nan")]]},
                {"mode": "paint", "width": "3", "points": [[1, 1]]},
                ["paint", 3]):
        assert stroke_problem(bad)
        with pytest.raises(ValueError):
            Stroke.from_doc(bad)
