"""Click mapping between the drawing canvas and full-resolution image pixels (ui/canvas.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ui import canvas as cv
from ui.state import display_size_for


def test_point_tool_geometry_gives_the_click_back():
    # What streamlit-drawable-canvas 0.13.0's point tool stores for a click at (123.25, 45.5)
    # with point_display_radius=3 and stroke_width=2: origin left/center, left = x - (r + sw/2).
    obj = {"type": "circle", "originX": "left", "originY": "center", "left": 123.25 - 4.0,
           "top": 45.5, "radius": 3, "strokeWidth": 2, "scaleX": 1, "scaleY": 1}
    assert cv.object_centre(obj) == pytest.approx((123.25, 45.5))


@pytest.mark.parametrize("origin_x, origin_y", [("left", "top"), ("center", "center"),
                                                ("right", "bottom"), ("left", "center")])
def test_object_centre_for_any_origin(origin_x, origin_y):
    r, sw, sx, sy = 5.0, 3.0, 2.0, 0.5
    w, h = (2 * r + sw) * sx, (2 * r + sw) * sy
    cx, cy = 200.0, 100.0
    fx = {"left": 0.0, "center": 0.5, "right": 1.0}[origin_x]
    fy = {"top": 0.0, "center": 0.5, "bottom": 1.0}[origin_y]
    obj = {"type": "circle", "originX": origin_x, "originY": origin_y, "radius": r,
           "strokeWidth": sw, "scaleX": sx, "scaleY": sy,
           "left": cx - w / 2 + fx * w, "top": cy - h / 2 + fy * h}
    assert cv.object_centre(obj) == pytest.approx((cx, cy))


def test_canvas_points_keeps_click_order_and_ignores_other_shapes():
    drawing = cv.points_drawing([[10, 20], [30.5, 40.25], [0, 0]])
    drawing["objects"].insert(1, {"type": "rect", "left": 1, "top": 1, "width": 5, "height": 5})
    pts = cv.canvas_points(drawing)
    np.testing.assert_allclose(pts, [[10, 20], [30.5, 40.25], [0, 0]])
    assert cv.canvas_points(None).shape == (0, 2)
    assert cv.canvas_points({"objects": []}).shape == (0, 2)


def test_canvas_to_image_scales_to_full_resolution():
    display, full = (900, 675), (4000, 3000)
    # The centre of display pixel (i, j) is (i + 0.5, j + 0.5) on the canvas.
    pts = cv.canvas_to_image([[0.5, 0.5], [450, 337.5], [899.5, 674.5]], display, full)
    s = 4000 / 900
    np.testing.assert_allclose(pts, [[0.5 * s - 0.5, 0.5 * s - 0.5], [1999.5, 1499.5],
                                     [899.5 * s - 0.5, 674.5 * s - 0.5]])


def test_full_pixel_round_trip_is_exact():
    display, full = (900, 675), (12000, 9000)
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(0, 11999, 50), rng.uniform(0, 8999, 50)])
    back = cv.canvas_to_image(cv.image_to_canvas(pts, display, full), display, full)
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_clicks_at_the_border_stay_inside_the_image():
    pts = cv.canvas_to_image([[0, 0], [900, 675], [-3, 700]], (900, 675), (4000, 3000))
    assert pts.min() >= 0
    assert pts[:, 0].max() <= 3999 and pts[:, 1].max() <= 2999
    raw = cv.canvas_to_image([[-3, 700]], (900, 675), (4000, 3000), clip=False)
    assert raw[0, 0] < 0 and raw[0, 1] > 2999


def test_unscaled_image_maps_pixel_centres_to_indices():
    pts = cv.canvas_to_image([[10.5, 3.5]], (64, 48), (64, 48))
    np.testing.assert_allclose(pts, [[10, 3]])


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="positive"):
        cv.canvas_to_image([[1, 1]], (0, 10), (10, 10))


def test_display_size_fits_and_keeps_aspect():
    # at most 666 x 748 CSS px: what a 1280 x 900 window leaves for the photo (ui/layout.py)
    assert display_size_for((4000, 3000)) == (666, 500)
    assert display_size_for((12000, 9000)) == (666, 500)
    assert display_size_for((1000, 3000)) == (249, 748)
    assert display_size_for((451, 300)) == (666, 443)  # small photos enlarged, at most 2x
    assert display_size_for((160, 100)) == (320, 200)
    assert display_size_for((800, 600)) == (666, 500)
    assert display_size_for((20000, 1)) == (666, 1)


def test_canvas_key_changes_with_generation_and_image():
    a0, a1 = cv.canvas_key("a.jpg", 0), cv.canvas_key("a.jpg", 1)
    assert a0 != a1 and a0 == cv.canvas_key("a.jpg", 0)
    assert cv.canvas_key("b.jpg", 0) != a0
