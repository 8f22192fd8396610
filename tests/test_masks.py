"""Mask files: names, atomic writes, label maps and their PNG / .npy round trips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dextr_core.masks import (
    MaskFileError,
    atomic_write,
    draft_path,
    label_map,
    load_label_map,
    mask_path,
    save_label_map,
    split_label_map,
)


def random_masks(rng, count: int, shape=(40, 60)) -> list[np.ndarray]:
    masks = []
    for _ in range(count):
        m = np.zeros(shape, bool)
        y, x = rng.integers(0, shape[0] - 5), rng.integers(0, shape[1] - 5)
        m[y : y + rng.integers(2, 15), x : x + rng.integers(2, 15)] = True
        masks.append(m)
    return masks


def test_mask_path_mirrors_sub_folders(tmp_path: Path):
    assert mask_path(tmp_path, "a/b/img.jpg", "_mask", "png") == tmp_path / "a/b/img_mask.png"
    assert mask_path(tmp_path, "img.JPG", "", "npy") == tmp_path / "img.npy"
    assert mask_path(tmp_path, "x.y.tif", "-m", "png") == tmp_path / "x.y-m.png"


@pytest.mark.parametrize("bad", ["../etc/passwd", "/abs/img.jpg", "a/../../b.jpg"])
def test_mask_path_refuses_ids_outside_destination(tmp_path: Path, bad: str):
    with pytest.raises(ValueError):
        mask_path(tmp_path, bad, "_mask", "png")
    with pytest.raises(ValueError):
        draft_path(tmp_path, bad)


def test_mask_path_refuses_unknown_format(tmp_path: Path):
    with pytest.raises(ValueError, match="png"):
        mask_path(tmp_path, "img.jpg", "_mask", "jpg")


def test_draft_path(tmp_path: Path):
    assert draft_path(tmp_path, "a/img.jpg") == tmp_path / ".drafts" / "a" / "img.jpg.png"
    assert draft_path(tmp_path, "img.jpg") != draft_path(tmp_path, "img.png")


def test_label_map_later_objects_win():
    a = np.zeros((4, 5), bool)
    a[0:3, 0:3] = True
    b = np.zeros((4, 5), bool)
    b[2:4, 2:5] = True
    lm = label_map([a, b], (4, 5))
    assert lm.dtype == np.uint8
    expected = np.zeros((4, 5), np.uint8)
    expected[a] = 1
    expected[b] = 2
    np.testing.assert_array_equal(lm, expected)
    assert lm[2, 2] == 2  # overlap -> later object
    assert label_map([], (3, 2)).shape == (3, 2)


def test_label_map_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        label_map([np.zeros((3, 3), bool)], (3, 4))


@pytest.mark.parametrize("fmt", ["png", "npy"])
def test_round_trip(tmp_path: Path, fmt: str):
    rng = np.random.default_rng(0)
    masks = random_masks(rng, 7)
    lm = label_map(masks, (40, 60))
    path = mask_path(tmp_path, "sub/img.jpg", "_mask", fmt)
    save_label_map(path, lm)
    assert path.is_file()
    back = load_label_map(path)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, lm)
    split = split_label_map(back)
    assert len(split) == int(lm.max())
    for i, m in enumerate(split, start=1):
        np.testing.assert_array_equal(m, lm == i)


def test_png_is_mode_l(tmp_path: Path):
    lm = np.zeros((5, 5), np.uint8)
    lm[1:3, 1:3] = 3
    save_label_map(tmp_path / "m.png", lm)
    with Image.open(tmp_path / "m.png") as img:
        assert img.mode == "L"
        assert img.format == "PNG"


@pytest.mark.parametrize("fmt", ["png", "npy"])
def test_more_than_255_objects_uses_uint16(tmp_path: Path, fmt: str):
    shape = (20, 20)
    masks = []
    for i in range(300):
        m = np.zeros(shape, bool)
        m.flat[i] = True
        masks.append(m)
    lm = label_map(masks, shape)
    assert lm.dtype == np.uint16 and lm.max() == 300
    save_label_map(tmp_path / f"m.{fmt}", lm)
    back = load_label_map(tmp_path / f"m.{fmt}")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, lm)
    if fmt == "png":
        with Image.open(tmp_path / "m.png") as img:
            assert img.mode.startswith("I")
    split = split_label_map(back)
    assert len(split) == 300 and split[299].sum() == 1 and split[299].flat[299]


def test_split_keeps_indices_of_covered_objects():
    a = np.ones((3, 3), bool)
    b = np.ones((3, 3), bool)
    split = split_label_map(label_map([a, b], (3, 3)))
    assert len(split) == 2 and not split[0].any() and split[1].all()


def test_atomic_write_leaves_no_temp_file(tmp_path: Path):
    target = tmp_path / "deep" / "folder" / "file.bin"
    atomic_write(target, b"first")
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_atomic_write_failure_keeps_old_file(tmp_path: Path, monkeypatch):
    target = tmp_path / "file.bin"
    atomic_write(target, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        atomic_write(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_save_refuses_unknown_suffix(tmp_path: Path):
    with pytest.raises(ValueError, match=".png or .npy"):
        save_label_map(tmp_path / "m.jpg", np.zeros((2, 2), np.uint8))


def test_load_corrupt_or_wrong_files(tmp_path: Path):
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(MaskFileError, match="bad.png"):
        load_label_map(tmp_path / "bad.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(MaskFileError, match="single-channel"):
        load_label_map(tmp_path / "rgb.png")
    np.save(tmp_path / "f.npy", np.zeros((3, 3), np.float32))
    with pytest.raises(MaskFileError, match="integer"):
        load_label_map(tmp_path / "f.npy")
    with pytest.raises(MaskFileError, match="not found"):
        load_label_map(tmp_path / "missing.png")


def test_reads_annotool_style_palette_png(tmp_path: Path):
    lm = np.array([[0, 1], [2, 2]], np.uint8)
    img = Image.fromarray(lm).convert("P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    img.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_label_map(tmp_path / "p.png"), lm)


def test_a_mask_file_over_the_pixel_budget_is_refused_from_its_header(tmp_path, monkeypatch):
    from PIL import ImageFile
    from test_images import write_bilevel_png  # tests/ is on sys.path (pytest prepend mode)

    from dextr_core.masks import MaskFileError, load_object_mask

    huge = tmp_path / "huge_mask.png"
    write_bilevel_png(huge, 40000, 40000)  # 1.6 G pixels decoded, ~200 KB on disk

    def no_decoding(self):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(MaskFileError, match="40000 x 40000 px"):
        load_label_map(huge)
    assert load_object_mask(huge) is None  # the caller rebuilds it from the clicks
