"""extreme_points: DEXTR's simulated clicks (left, right, top, bottom), tie rule, bad masks."""

import numpy as np
import pytest

from dextr_core.points import extreme_points


def test_single_pixel_gives_that_pixel_four_times():
    mask = np.zeros((5, 7), bool)
    mask[3, 2] = True
    assert extreme_points(mask).tolist() == [[2, 3]] * 4


def test_points_are_x_y_in_order_left_right_top_bottom():
    # A diamond whose four tips are unique pixels.
    mask = np.zeros((20, 30), bool)
    mask[10, 5:26] = True  # horizontal bar: left tip (5, 10), right tip (25, 10)
    mask[3:18, 15] = True  # vertical bar: top tip (15, 3), bottom tip (15, 17)
    points = extreme_points(mask)
    assert points.shape == (4, 2)
    assert np.issubdtype(points.dtype, np.integer)
    assert points.tolist() == [[5, 10], [25, 10], [15, 3], [15, 17]]


def test_ties_take_the_lower_median_along_the_other_axis():
    mask = np.zeros((12, 12), bool)
    mask[2:9, 1:11] = True  # rows 2..8, columns 1..10: every side is a tie
    left, right, top, bottom = extreme_points(mask).tolist()
    # Rows 2..8 (7 values): median 5. Columns 1..10 (10 values): lower median 5.
    assert left == [1, 5]
    assert right == [10, 5]
    assert top == [5, 2]
    assert bottom == [5, 8]


def test_tie_among_scattered_pixels_picks_an_object_pixel():
    mask = np.zeros((10, 10), bool)
    mask[[1, 4, 8], 0] = True  # three pixels on the left-most column, not contiguous
    mask[5, 3] = True
    left = extreme_points(mask)[0]
    assert left.tolist() == [0, 4]
    for x, y in extreme_points(mask):
        assert mask[y, x]


def test_every_point_lies_on_the_object_and_on_its_box():
    rng = np.random.default_rng(3)
    for _ in range(20):
        mask = rng.random((15, 17)) > 0.8
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        (lx, ly), (rx, ry), (tx, ty), (bx, by) = extreme_points(mask)
        assert (lx, rx, ty, by) == (xs.min(), xs.max(), ys.min(), ys.max())
        for x, y in ((lx, ly), (rx, ry), (tx, ty), (bx, by)):
            assert mask[y, x]


def test_non_bool_masks_count_nonzero_pixels():
    mask = np.zeros((6, 6), np.uint8)
    mask[1:3, 2:5] = 255
    assert extreme_points(mask).tolist() == extreme_points(mask > 0).tolist()


def test_empty_mask_raises():
    with pytest.raises(ValueError, match="empty mask"):
        extreme_points(np.zeros((4, 4), bool))


def test_wrong_dimensions_raise():
    with pytest.raises(ValueError, match="2-D"):
        extreme_points(np.ones((4, 4, 3), bool))
