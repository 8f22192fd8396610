"""DEXTR pre/post-processing against hand-computed cases (SPEC.md: relax 50 px, zero fill, points
scaled and truncated, 10 px FWHM heatmap, bicubic paste, tight-box zeroing, threshold > t)."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from dextr_core import processing
from dextr_core.processing import (
    crop_zero_padded,
    make_input,
    paste_mask,
    paste_probability,
    point_heatmap,
    points_in_crop,
    relaxed_box,
    validate_points,
)

# A 100 x 80 image (W x H) and four extreme points near its top-left corner.
H, W = 80, 100
POINTS = np.array([[10, 20], [60, 25], [30, 5], [35, 70]])
# min x 10, min y 5, max x 60, max y 70, relaxed by 50 and not clipped:
BOX = (-40, -45, 110, 120)  # crop 151 wide, 166 high


def coordinate_image() -> np.ndarray:
    """uint8 image whose pixel (x, y) holds (x, y, 7) so a crop tells where it came from."""
    ys, xs = np.mgrid[0:H, 0:W]
    return np.stack([xs, ys, np.full_like(xs, 7)], axis=-1).astype(np.uint8)


def test_relaxed_box_is_not_clipped():
    assert relaxed_box(POINTS) == BOX


def test_crop_zero_fills_outside_the_image():
    image = coordinate_image()
    crop = crop_zero_padded(image, BOX)
    assert crop.shape == (166, 151, 3)
    # image pixel (0, 0) sits at crop (x=40, y=45); everything left of / above it is zero
    np.testing.assert_array_equal(crop[45, 40], [0, 0, 7])
    np.testing.assert_array_equal(crop[45 + 12, 40 + 34], [34, 12, 7])
    np.testing.assert_array_equal(crop[45 + 79, 40 + 99], [99, 79, 7])
    assert not crop[:45].any() and not crop[:, :40].any()
    # the box ends at x=110, y=120: the image's last column 99 is crop column 139
    assert not crop[:, 140:].any() and not crop[125:].any()
    assert crop[45:125, 40:140, 2].min() == 7


def test_crop_inside_the_image_is_a_view():
    image = coordinate_image()
    crop = crop_zero_padded(image, (5, 6, 20, 30))
    assert crop.shape == (25, 16, 3) and np.shares_memory(crop, image)
    np.testing.assert_array_equal(crop[0, 0], [5, 6, 7])


def test_points_scaled_into_the_crop_and_truncated():
    # x: (x + 40) * 512 / 151, y: (y + 45) * 512 / 166, truncated:
    # (10, 20) -> (169.54, 200.48); (60, 25) -> (339.07, 215.90)
    # (30, 5) -> (237.35, 154.22); (35, 70) -> (254.30, 354.70)
    expected = [[169, 200], [339, 215], [237, 154], [254, 354]]
    np.testing.assert_array_equal(points_in_crop(POINTS, BOX), expected)


def test_heatmap_peaks_at_points_and_spans_0_to_255():
    points = np.array([[100, 100], [400, 120], [250, 30], [260, 480]])
    heat = point_heatmap(points)
    assert heat.shape == (512, 512) and heat.dtype == np.float32
    assert heat.min() == 0.0 and heat.max() == pytest.approx(255.0)
    for x, y in points:
        assert heat[y, x] == pytest.approx(255.0)
        # 10 px full width at half maximum: half the peak 5 px away, in x and in y
        assert heat[y, x + 5] == pytest.approx(127.5, abs=1e-3)
        assert heat[y - 5, x] == pytest.approx(127.5, abs=1e-3)
        # exp(-4 ln2 * 100 / 100) = 1/16 at 10 px
        assert heat[y + 10, x] == pytest.approx(255.0 / 16, abs=1e-3)
    assert heat[300, 100] < 1e-6  # far from every point


def test_heatmap_is_the_maximum_over_points():
    together = point_heatmap(np.array([[200, 200], [206, 200]]))
    alone = point_heatmap(np.array([[200, 200]]))
    assert together[200, 203] == pytest.approx(alone[200, 203], abs=1e-3)  # not summed
    assert together[200, 195] == pytest.approx(alone[200, 195], abs=1e-3)


def test_make_input_channels_and_box():
    image = np.full((H, W, 3), 200, np.uint8)
    x, box = make_input(image, POINTS)
    assert box == BOX
    assert x.shape == (512, 512, 4) and x.dtype == np.float32
    # the crop's corner lies outside the image (zero fill), its centre inside (200)
    np.testing.assert_array_equal(x[0, 0, :3], 0)
    np.testing.assert_array_equal(x[511, 511, :3], 0)
    np.testing.assert_array_equal(x[256, 256, :3], 200)
    heat = x[:, :, 3]
    for px, py in [[169, 200], [339, 215], [237, 154], [254, 354]]:
        assert heat[py, px] == pytest.approx(255.0)
    assert heat.min() == 0.0


def test_float_clicks_fall_in_the_pixel_they_hit():
    image = np.zeros((H, W, 3), np.uint8)
    x_int, box_int = make_input(image, POINTS)
    x_float, box_float = make_input(image, POINTS + 0.7)
    assert box_float == box_int
    np.testing.assert_array_equal(x_float, x_int)


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda rgb: rgb[:, :, 0], id="gray"),
        pytest.param(lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)]), id="rgba"),
        pytest.param(lambda rgb: rgb.astype(np.uint16) * 257, id="16-bit"),
    ],
)
def test_other_image_types_give_the_rgb_input(convert):
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (H, W), dtype=np.uint8)
    rgb = np.dstack([gray, gray, gray])
    expected, _ = make_input(rgb, POINTS)
    got, box = make_input(convert(rgb), POINTS)
    assert box == BOX
    np.testing.assert_array_equal(got, expected)


def test_paste_zeroes_outside_the_tight_box():
    prob = np.ones((512, 512), np.float32)
    pasted = paste_probability(prob, BOX, (H, W, 3))
    assert pasted.shape == (H, W) and pasted.dtype == np.float32
    # tight box: x 10..60, y 5..70
    np.testing.assert_allclose(pasted[5:71, 10:61], 1.0, atol=1e-6)
    assert not pasted[:5].any() and not pasted[71:].any()
    assert not pasted[:, :10].any() and not pasted[:, 61:].any()
    mask = paste_mask(prob, BOX, (H, W))
    assert mask.dtype == bool and mask.sum() == 66 * 51


def test_paste_at_the_border_drops_what_falls_outside():
    # points on all four borders: tight box = the whole image, relaxed box 50 px past it
    points = np.array([[0, 10], [99, 40], [50, 0], [50, 79]])
    _, box = make_input(np.zeros((H, W, 3), np.uint8), points)
    assert box == (-50, -50, 149, 129)  # 200 x 180
    prob = np.zeros((512, 512, 1), np.float32)
    prob[:, :256] = 0.95  # left half of the relaxed box: crop x < 100, i.e. image x < 50
    mask = paste_mask(prob, box, (H, W))
    assert mask.shape == (H, W)
    assert mask[:, :45].all()
    assert not mask[:, 55:].any()
    pasted = paste_probability(prob, box, (H, W))
    assert pasted.min() >= 0.0 and pasted.max() <= 1.0  # bicubic overshoot clipped
    np.testing.assert_allclose(pasted[:, :40], 0.95, atol=1e-5)


def test_paste_resizes_bicubically_to_the_relaxed_box():
    """A ramp across the 512 map becomes a ramp across the relaxed box (151 px wide)."""
    ramp = np.tile(np.linspace(0.0, 1.0, 512, dtype=np.float32), (512, 1))
    pasted = paste_probability(ramp, BOX, (H, W))
    # image x maps to crop x + 40; crop x to map x ~ (x + 0.5) * 512 / 151 - 0.5
    for x in (10, 30, 60):
        map_x = (x + 40 + 0.5) * 512 / 151 - 0.5
        assert pasted[40, x] == pytest.approx(map_x / 511, abs=2e-3)


def test_threshold():
    below = np.full((512, 512), 0.79, np.float32)
    assert not paste_mask(below, BOX, (H, W), threshold=0.8).any()
    assert paste_mask(below, BOX, (H, W), threshold=0.7).sum() == 66 * 51
    above = np.full((512, 512), 0.81, np.float32)
    assert paste_mask(above, BOX, (H, W), threshold=0.8).sum() == 66 * 51
    assert not paste_mask(above, BOX, (H, W), threshold=0.9).any()


def test_paste_mask_equals_thresholded_probability():
    rng = np.random.default_rng(0)
    prob = rng.random((512, 512), dtype=np.float32)
    for box in (BOX, (-50, -50, 149, 129), (20, 10, 90, 75)):
        np.testing.assert_array_equal(
            paste_mask(prob, box, (H, W), 0.6), paste_probability(prob, box, (H, W)) > 0.6
        )


# --- scratch buffers (reused box-sized intermediates) ----------------------------------------


def test_crop_into_a_dirty_buffer_equals_a_fresh_crop():
    image = coordinate_image()
    for box in (BOX, (-50, -50, 149, 129), (90, 70, 130, 110), (-60, -60, -20, -20)):
        shape = (box[3] - box[1] + 1, box[2] - box[0] + 1, 3)
        dirty = np.full(shape, 99, np.uint8)
        np.testing.assert_array_equal(
            crop_zero_padded(image, box, out=dirty), crop_zero_padded(image, box)
        )
    with pytest.raises(ValueError, match="out must be"):
        crop_zero_padded(image, BOX, out=np.zeros((5, 5, 3), np.uint8))


@pytest.fixture
def pooled(monkeypatch):
    """Pool every intermediate, however small, so these small cases go through reused buffers."""
    pool = processing._ScratchBuffers(min_bytes=0, keep=2)
    monkeypatch.setattr(processing, "_SCRATCH", pool)
    return pool


def test_reused_buffers_give_the_results_of_fresh_ones(pooled):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    for points in (
        POINTS,
        [[0, 10], [99, 40], [50, 0], [50, 79]],
        [[20, 15], [80, 30], [50, 10], [45, 60]],
    ):
        x, box = make_input(image, points)
        crop = crop_zero_padded(image, box)
        np.testing.assert_array_equal(
            x[:, :, :3], cv2.resize(crop, (512, 512), interpolation=cv2.INTER_CUBIC)
        )
        prob = rng.random((512, 512), dtype=np.float32)
        size = (box[2] - box[0] + 1, box[3] - box[1] + 1)
        full = cv2.resize(prob, size, interpolation=cv2.INTER_CUBIC)
        expected = np.zeros((H, W), np.float32)
        x0, y0 = max(box[0] + 50, 0), max(box[1] + 50, 0)
        x1, y1 = min(box[2] - 50, W - 1), min(box[3] - 50, H - 1)
        expected[y0 : y1 + 1, x0 : x1 + 1] = full[
            y0 - box[1] : y1 - box[1] + 1, x0 - box[0] : x1 - box[0] + 1
        ]
        np.testing.assert_array_equal(paste_probability(prob, box, (H, W)), np.clip(expected, 0, 1))
        np.testing.assert_array_equal(paste_mask(prob, box, (H, W)), expected > 0.8)
    assert 0 < len(pooled._free) <= 2


def test_threads_sharing_the_pool_never_share_a_buffer(pooled):
    shape = (1500, 2000)  # large enough that the resizes (which release the GIL) overlap
    rng = np.random.default_rng(4)
    probs = [rng.random((512, 512), dtype=np.float32) for _ in range(4)]
    boxes = [
        (-50, -50, 2049, 1549),
        (100, 80, 1900, 1400),
        (-20, 300, 1500, 1549),
        (0, 0, 800, 900),
    ]
    expected = [paste_probability(p, b, shape) for p, b in zip(probs, boxes, strict=True)]
    start, failures = threading.Barrier(4), []

    def work(i: int) -> None:
        start.wait()
        for _ in range(10):
            if not np.array_equal(paste_probability(probs[i], boxes[i], shape), expected[i]):
                failures.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


# --- validation -------------------------------------------------------------------------------


def test_valid_points_come_back_as_float():
    pts = validate_points([[1, 2], [3, 4], [5, 6], [7, 8]], (H, W, 3))
    assert pts.dtype == np.float64 and pts.shape == (4, 2)


def test_more_than_four_points_are_fine():
    x, box = make_input(np.zeros((H, W, 3), np.uint8), np.vstack([POINTS, [[40, 40]]]))
    assert box == BOX and x.shape == (512, 512, 4)


def test_fewer_than_four_points():
    with pytest.raises(ValueError, match="at least four extreme points.*got 3"):
        validate_points(POINTS[:3], (H, W))


@pytest.mark.parametrize("points", [np.zeros((4, 3)), np.zeros(8), [[1, "a"]] * 4])
def test_wrong_shape_or_type(points):
    with pytest.raises(ValueError, match="points"):
        validate_points(points, (H, W))


def test_nan_points():
    with pytest.raises(ValueError, match="NaN"):
        validate_points([[1, 2], [3, np.nan], [5, 6], [7, 8]], (H, W))


def test_all_points_on_one_spot():
    with pytest.raises(ValueError, match="one spot"):
        validate_points([[30, 40]] * 4, (H, W))
    with pytest.raises(ValueError, match="one spot"):
        validate_points([[30.2, 40.1], [30.9, 40.5], [30, 40], [30.5, 40.9]], (H, W))


def test_points_just_outside_are_clipped():
    # 2 % of 100 x 80: up to 2 px outside in x, 1.6 px in y
    pts = validate_points([[-2, 10], [101, 20], [40, -1.5], [50, 80.5]], (H, W))
    np.testing.assert_array_equal(pts, [[0, 10], [99, 20], [40, 0], [50, 79]])
    _, box = make_input(np.zeros((H, W), np.uint8), [[-2, 10], [101, 20], [40, -1.5], [50, 80.5]])
    assert box == (-50, -50, 149, 129)


@pytest.mark.parametrize("bad", [[-3, 10], [102, 10], [40, -2], [40, 82]])
def test_points_far_outside_name_the_point_and_the_size(bad):
    points = [bad, [60, 25], [30, 5], [35, 70]]
    with pytest.raises(ValueError, match=r"outside the 100 x 80 image") as info:
        validate_points(points, (H, W, 3))
    assert f"({bad[0]:g}, {bad[1]:g})" in str(info.value)
