"""Click mapping between the drawing canvas and full-resolution image pixels (ui/canvas.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ui import canvas as cv
from ui.photos import display_size_for


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


def test_the_photo_grows_with_a_larger_window_in_steps_up_to_its_largest():
    from ui.layout import PHOTO_LARGEST, PHOTO_MAX, photo_max

    assert photo_max(None) == PHOTO_MAX == (666, 748)  # unknown window: the 1280 x 900 budget
    assert photo_max((1280, 900)) == photo_max((1024, 700)) == PHOTO_MAX  # never smaller
    assert photo_max((1359, 979)) == PHOTO_MAX  # less than a step more: unchanged
    assert photo_max((1600, 900)) == (666 + 320, 748)
    assert photo_max((1920, 1080)) == (1280, 748 + 160)
    assert photo_max((3840, 2160)) == PHOTO_LARGEST
    assert display_size_for((4000, 3000), photo_max((1920, 1080))) == (1211, 908)


def test_canvas_key_changes_with_generation_and_image():
    a0, a1 = cv.canvas_key("a.jpg", 0), cv.canvas_key("a.jpg", 1)
    assert a0 != a1 and a0 == cv.canvas_key("a.jpg", 0)
    assert cv.canvas_key("b.jpg", 0) != a0


# ---- views (the zoomed view) and brush paths ---------------------------------------------------


def test_the_whole_view_maps_like_the_click_mapping():
    view = cv.whole_view((800, 600), (4000, 3000))
    pts = np.array([[0.0, 0.0], [123.4, 567.8], [799.9, 599.9]])
    np.testing.assert_allclose(view.to_image(pts), cv.canvas_to_image(
        pts, (800, 600), (4000, 3000), clip=False))
    np.testing.assert_allclose(view.to_canvas(view.to_image(pts)), pts, atol=1e-9)
    assert not view.zoomed


def test_zoom_shows_the_box_with_a_margin_at_most_four_screen_px_per_image_px():
    small = cv.zoom_view((1000, 1000, 1039, 1019), (800, 600), (4000, 3000))
    assert small.zoomed and small.sx == small.sy == 4.0  # a 40 x 20 px box: capped at 4
    centre = small.to_image([[400.0, 300.0]])[0]  # the canvas centre shows the box's centre
    np.testing.assert_allclose(centre, [1019.5, 1009.5])
    big = cv.zoom_view((1000, 1000, 1999, 1499), (800, 600), (4000, 3000))
    assert 0.2 < big.sx < 4.0  # 1000 x 500 px with margins fills the canvas's width
    x0, _ = big.to_image([[0.0, 0.0]])[0] + 0.5
    x1, _ = big.to_image([[800.0, 0.0]])[0] + 0.5
    assert x0 <= 1000 - 0.15 * 1000 + 1e-6 and x1 >= 2000 + 0.15 * 1000 - 1e-6
    corner = cv.zoom_view((0, 0, 9, 9), (800, 600), (4000, 3000))
    assert (corner.x0, corner.y0) == (0.0, 0.0)  # kept inside the photo
    whole = cv.zoom_view((0, 0, 3999, 2999), (800, 600), (4000, 3000))
    assert whole.sx == pytest.approx(0.2)  # never smaller than the whole photo


def test_a_click_in_the_zoomed_view_lands_on_the_pixel_shown_under_it():
    full = (300, 200)
    photo = np.arange(200 * 300).reshape(200, 300)  # each pixel's value is its index
    for view in (cv.zoom_view((100, 50, 120, 60), (800, 600), full),
                 cv.zoom_view((0, 0, 5, 5), (640, 480), full),
                 cv.whole_view((450, 300), full)):
        shown = cv.view_pixels(photo, view, (640, 480), fill=-1)
        ys, xs = np.mgrid[0:480:37, 0:640:41]
        centres = np.column_stack([xs.ravel() + 0.5, ys.ravel() + 0.5])
        hit = np.floor(view.to_image(centres) + 0.5).astype(int)
        inside = (hit[:, 0] >= 0) & (hit[:, 0] < 300) & (hit[:, 1] >= 0) & (hit[:, 1] < 200)
        expected = np.where(inside, hit[:, 1] * 300 + hit[:, 0], -1)
        np.testing.assert_array_equal(shown[ys.ravel(), xs.ravel()], expected)
        back = view.to_canvas(view.to_image(centres))
        np.testing.assert_allclose(back, centres, atol=1e-9)


def test_a_stroke_in_the_zoomed_view_is_in_image_pixels():
    view = cv.zoom_view((1000, 1000, 1039, 1019), (800, 600), (4000, 3000))
    stroke = view.stroke("paint", [[400.0, 300.0], [480.0, 300.0]], 16)
    assert stroke.width == 4.0  # 16 screen px at 4 screen px per image px
    assert stroke.points == ((1019.5, 1009.5), (1039.5, 1009.5))


def _fabric_path(points, width=10.0, stroke="rgba(0,0,0,1)", moved=(0.0, 0.0)):
    """A path as Fabric 6's pencil brush stores it: points as drawn, pathOffset = their box's
    centre, left/top = the box (with the stroke) at origin left/top (+ a move)."""
    pts = np.asarray(points, float)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    path = [["M", *pts[0]]] + [["L", *p] for p in pts[1:]]
    return {"type": "Path", "path": path, "stroke": stroke, "strokeWidth": width,
            "originX": "left", "originY": "top", "scaleX": 1, "scaleY": 1,
            "width": hi[0] - lo[0], "height": hi[1] - lo[1],
            "pathOffset": {"x": (lo[0] + hi[0]) / 2, "y": (lo[1] + hi[1]) / 2},
            "left": lo[0] - width / 2 + moved[0], "top": lo[1] - width / 2 + moved[1]}


def test_paths_are_read_in_drawing_order_and_a_moved_path_moves_its_points():
    pts = [[10.0, 20.0], [30.0, 25.0], [50.0, 20.0]]
    data = {"objects": [
        cv.point_object(5, 5),
        _fabric_path(pts, 8, "red"),
        {"type": "Path", "path": [["M", 1, 2], ["Q", 3, 4, 5, 6], ["L", 7, 8]],
         "stroke": "blue", "strokeWidth": 2},
        _fabric_path(pts, 8, "red", moved=(15.0, -5.0)),
    ]}
    (c1, w1, p1), (c2, w2, p2), (c3, _, p3) = cv.canvas_paths(data)
    assert (c1, w1, c2, w2) == ("red", 8.0, "blue", 2.0)
    np.testing.assert_allclose(p1, pts)
    np.testing.assert_allclose(p2, [[1, 2], [3, 4], [5, 6], [7, 8]])
    np.testing.assert_allclose(p3, np.asarray(pts) + [15.0, -5.0])
    assert cv.canvas_paths(None) == [] and len(cv.canvas_points(data)) == 1
