"""Mask overlays drawn on display-size images (ui/overlay.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ui.overlay import PALETTE, colour_for, colour_hex, draw_overlay, fit_mask


def _square(shape, y0, y1, x0, x1):
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_fill_outline_and_halo():
    image = np.full((60, 80, 3), 128, np.uint8)
    mask = _square((60, 80), 20, 40, 20, 50)
    out = draw_overlay(image, [mask], alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == image.shape
    red = np.array(PALETTE[0])
    np.testing.assert_allclose(out[30, 35], (128 * 0.5 + red * 0.5), atol=1)  # filled inside
    assert tuple(out[20, 35]) == PALETTE[0] and tuple(out[21, 35]) == PALETTE[0]  # 2 px outline
    assert tuple(out[22, 35]) != PALETTE[0]
    assert tuple(out[19, 35]) == (20, 20, 20)  # dark halo on a mid-grey photo
    assert tuple(out[5, 5]) == (128, 128, 128)  # elsewhere untouched
    assert (image == 128).all()  # the input is not modified


def test_halo_is_white_on_dark_pixels():
    image = np.full((40, 40, 3), 10, np.uint8)
    out = draw_overlay(image, [_square((40, 40), 10, 30, 10, 30)])
    assert tuple(out[9, 20]) == (255, 255, 255)


def test_each_object_gets_its_own_colour():
    image = np.full((50, 100, 3), 200, np.uint8)
    masks = [_square((50, 100), 10, 40, 5 + 30 * i, 30 + 30 * i) for i in range(3)]
    out = draw_overlay(image, masks)
    centres = [tuple(out[25, 17 + 30 * i]) for i in range(3)]
    assert len(set(centres)) == 3
    assert [tuple(out[10, 17 + 30 * i]) for i in range(3)] == [PALETTE[i] for i in range(3)]


def test_palette_is_distinct_and_saturated():
    colours = np.array(PALETTE, dtype=float)
    distances = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    assert distances[~np.eye(len(PALETTE), dtype=bool)].min() > 60
    assert all(max(c) - min(c) >= 100 for c in PALETTE)  # saturated: readable on gray photos
    assert colour_for(len(PALETTE)) == PALETTE[0]
    assert colour_hex(0) == "#e6194b"


def test_full_resolution_masks_are_fitted_to_the_display():
    big = _square((3000, 4000), 1000, 2000, 1000, 3000)
    small = fit_mask(big, (675, 900))
    assert small.shape == (675, 900) and small.dtype == bool
    frac = small.mean()
    assert frac == pytest.approx(big.mean(), abs=0.005)
    image = np.zeros((675, 900, 3), np.uint8)
    out = draw_overlay(image, [big])
    assert out[337, 450].any() and not out[10, 10].any()


def test_fit_mask_enlarges_with_nearest():
    m = np.array([[1, 0], [0, 1]], dtype=bool)
    np.testing.assert_array_equal(fit_mask(m, (4, 4)), np.kron(m, np.ones((2, 2), bool)))


def test_points_are_marked():
    image = np.zeros((100, 100, 3), np.uint8)
    out = draw_overlay(image, [], points=[[30, 40], [70, 80]])
    assert tuple(out[40, 30]) == (255, 255, 0)
    assert tuple(out[80, 70]) == (255, 255, 0)
    assert not out[10, 10].any()


def test_empty_masks_and_bad_input():
    image = np.full((10, 10, 3), 7, np.uint8)
    np.testing.assert_array_equal(draw_overlay(image, [np.zeros((10, 10), bool)]), image)
    with pytest.raises(ValueError, match="uint8"):
        draw_overlay(image.astype(np.float32), [])
    with pytest.raises(ValueError, match="alpha"):
        draw_overlay(image, [], alpha=1.5)


@pytest.mark.parametrize("full, shown", [((3000, 4000), (675, 900)), ((300, 451), (100, 150))])
def test_fit_mask_matches_whole_image_area_resampling(full, shown):
    import cv2

    rng = np.random.default_rng(3)
    yy, xx = np.ogrid[:full[0], :full[1]]
    for _ in range(3):
        cx, cy = rng.integers(0, full[1]), rng.integers(0, full[0])
        r = rng.integers(5, min(full) // 3)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        fast = fit_mask(mask, shown)
        whole = cv2.resize(mask.astype(np.uint8) * 255, shown[::-1],
                           interpolation=cv2.INTER_AREA) >= 128
        # Only the crop's alignment to display pixels differs: at most along the outline.
        kernel = np.ones((3, 3), np.uint8)
        w8 = whole.astype(np.uint8)
        edge = (cv2.dilate(w8, kernel) - cv2.erode(w8, kernel)).astype(bool)
        assert not ((fast != whole) & ~edge).any()
        assert (fast != whole).sum() <= 0.05 * edge.sum()
    assert not fit_mask(np.zeros(full, bool), shown).any()


def _laid_over(image, layer, at):
    """``layer`` (h, w, 4) composited source-over onto ``image`` with its top-left at ``at``."""
    out = image.astype(np.float64)
    x, y = at
    h, w = layer.shape[:2]
    a = layer[..., 3:4] / 255.0
    out[y:y + h, x:x + w] = out[y:y + h, x:x + w] * (1 - a) + layer[..., :3] * a
    return out


def test_the_mask_layer_over_the_unchanged_photo_looks_like_the_burnt_in_overlay():
    from ui.overlay import overlay_layer

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(120, 200, 3)).astype(np.uint8)  # dark and light halos
    first = _square((120, 200), 20, 80, 30, 110)
    second = _square((120, 200), 50, 100, 90, 160)  # overlaps the first
    layer, at = overlay_layer(image, [first, second])
    assert at == (28, 18) and layer.shape == (84, 134, 4)  # the objects' box, halos in
    expected = draw_overlay(image, [first, second]).astype(np.float64)
    assert np.abs(_laid_over(image, layer, at) - expected).max() <= 1.0
    assert layer[0, 0, 3] == 0 and layer[40, 40, 3] == round(0.45 * 255)  # outside / a fill


def test_a_mask_layer_without_mask_pixels_is_empty():
    from ui.overlay import overlay_layer

    layer, at = overlay_layer(np.zeros((10, 12, 3), np.uint8), [np.zeros((10, 12), bool)])
    assert layer.shape == (0, 0, 4) and at == (0, 0)
    with pytest.raises(ValueError, match="H x W x 3"):
        overlay_layer(np.zeros((10, 12), np.uint8), [])
