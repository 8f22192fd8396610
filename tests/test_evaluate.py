"""The evaluation command and evaluate(): pairing, IoU with an ignore band, CSV, errors."""

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dextr_core.evaluate import DatasetError, EvalResult, evaluate, iou, main, next_click
from dextr_core.points import extreme_points

REPO = Path(__file__).resolve().parents[1]


def write_dataset(root: Path, n: int = 3, band: bool = False) -> Path:
    """n images (varied extensions) with one bright disc each on a dark background."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:90, :120]
    for i in range(n):
        cx, cy, r = 45 + 10 * i, 40 + 3 * i, 18 + 4 * i
        d2 = (xx - cx) ** 2 + (yy - cy) ** 2
        obj = d2 <= r**2
        image = np.where(obj[..., None], [200, 80, 60], [40, 120, 150]) + rng.normal(0, 8, (90, 120, 3))
        ext = [".jpg", ".png", ".bmp"][i % 3]
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / f"im{i}{ext}")
        mask = obj.astype(np.uint8) * 255
        if band:
            mask[(d2 > (r - 2) ** 2) & (d2 <= (r + 2) ** 2)] = 128
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
    return root


class OracleSegmenter:
    """Returns a fixed mask per image size, to check the evaluation arithmetic exactly."""

    name = "oracle"
    is_fallback = False

    def __init__(self, masks):
        self.masks = masks
        self.calls = []

    def segment(self, image, points):
        self.calls.append(np.asarray(points).copy())
        return self.masks[len(self.calls) - 1]


def test_evaluate_with_the_fallback_on_synthetic_discs(tmp_path):
    from dextr_core.fallback import GrabCutSegmenter

    root = write_dataset(tmp_path / "ds")
    result = evaluate(root, GrabCutSegmenter())
    assert isinstance(result, EvalResult)
    assert [o.id for o in result.objects] == ["im0", "im1", "im2"]
    assert all(o.iou > 0.85 for o in result.objects)
    assert all(o.seconds > 0 and (o.width, o.height) == (120, 90) for o in result.objects)
    assert result.miou == pytest.approx(np.mean([o.iou for o in result.objects]))


def test_evaluate_passes_extreme_points_and_computes_iou(tmp_path):
    root = write_dataset(tmp_path / "ds", n=2)
    truths = [np.asarray(Image.open(root / "masks" / f"im{i}.png")) > 127 for i in range(2)]
    half = truths[1].copy()
    half[:, :60] = False  # keeps a known part of the second disc
    oracle = OracleSegmenter([truths[0], half])
    result = evaluate(root, oracle)
    np.testing.assert_array_equal(oracle.calls[0], extreme_points(truths[0]))
    assert result.objects[0].iou == 1.0
    expected = np.count_nonzero(half) / np.count_nonzero(truths[1])
    assert result.objects[1].iou == pytest.approx(expected)


def test_ignore_value_is_left_out_of_object_and_iou(tmp_path):
    root = write_dataset(tmp_path / "ds", n=1, band=True)
    gt = np.asarray(Image.open(root / "masks" / "im0.png"))
    core = gt == 255
    # Predicting the core plus the whole band: perfect when the band is ignored, not otherwise.
    prediction = gt > 0
    with_ignore = evaluate(root, OracleSegmenter([prediction]), ignore=128)
    without = evaluate(root, OracleSegmenter([prediction]))
    assert with_ignore.objects[0].iou == 1.0
    assert without.objects[0].iou == pytest.approx(
        np.count_nonzero(gt > 127) / np.count_nonzero(gt > 0))
    # The extreme points come from the object without the band.
    oracle = OracleSegmenter([prediction])
    evaluate(root, oracle, ignore=128)
    np.testing.assert_array_equal(oracle.calls[0], extreme_points(core))


def test_iou_helper():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert iou(a, b) == 1.0
    a[0, :2] = True
    b[0, 1:3] = True
    assert iou(a, b) == pytest.approx(1 / 3)
    valid = np.ones((4, 4), bool)
    valid[0, 2] = False
    assert iou(a, b, valid) == pytest.approx(1 / 2)


def test_limit_and_skipped_empty_masks(tmp_path):
    root = write_dataset(tmp_path / "ds", n=3)
    Image.fromarray(np.zeros((90, 120), np.uint8)).save(root / "masks" / "im1.png")
    truths = [np.asarray(Image.open(root / "masks" / f"im{i}.png")) > 127 for i in (0, 2)]
    result = evaluate(root, OracleSegmenter(truths))
    assert [o.id for o in result.objects] == ["im0", "im2"]
    assert len(result.skipped) == 1 and result.skipped[0].startswith("im1")
    assert len(evaluate(root, OracleSegmenter(truths), limit=1).objects) == 1


def test_size_mismatch_is_reported_by_name(tmp_path):
    root = write_dataset(tmp_path / "ds", n=2)
    Image.fromarray(np.zeros((50, 60), np.uint8)).save(root / "masks" / "im1.png")
    with pytest.raises(DatasetError, match=r"im1: image im1\.png is 120 x 90 but mask im1\.png is 60 x 50"):
        evaluate(root, OracleSegmenter([]))


def test_missing_folders_are_reported(tmp_path):
    with pytest.raises(DatasetError, match="images/"):
        evaluate(tmp_path, OracleSegmenter([]))


def test_cli_prints_miou_and_writes_csv(tmp_path, capsys):
    root = write_dataset(tmp_path / "ds", n=3)
    (root / "images" / "orphan.jpg").write_bytes((root / "images" / "im0.jpg").read_bytes())
    out_csv = tmp_path / "out.csv"
    code = main([str(root), "--segmenter", "fallback", "--csv", str(out_csv), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0
    assert "orphan.jpg" in captured.err  # an image without a mask is named, then left out
    miou = float(re.search(r"mIoU:\s+([0-9.]+)", captured.out).group(1))
    assert 0.85 < miou <= 1.0
    assert "GrabCut fallback" in captured.out
    with out_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["im0", "im1", "im2"]
    assert set(rows[0]) == {"id", "iou", "seconds", "width", "height"}
    assert np.mean([float(r["iou"]) for r in rows]) == pytest.approx(miou, abs=1e-4)
    assert all(r["width"] == "120" and r["height"] == "90" for r in rows)


def test_cli_hints_at_ignore_for_banded_masks(tmp_path, capsys):
    root = write_dataset(tmp_path / "ds", n=1, band=True)
    assert main([str(root), "--segmenter", "fallback", "--no-progress"]) == 0
    assert "--ignore 128" in capsys.readouterr().err
    assert main([str(root), "--segmenter", "fallback", "--ignore", "128", "--no-progress"]) == 0
    assert "--ignore 128" not in capsys.readouterr().err


def test_cli_bad_input_exits_2_with_a_message(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere"), "--segmenter", "fallback", "--no-progress"]) == 2
    assert "not a dataset folder" in capsys.readouterr().err
    root = write_dataset(tmp_path / "ds", n=1)
    assert main([str(root), "--threshold", "1.5", "--no-progress"]) == 2
    assert "--threshold" in capsys.readouterr().err
    missing = tmp_path / "none.h5"
    assert main([str(root), "--segmenter", "dextr", "--weights", str(missing), "--no-progress"]) == 2
    assert "weights not found" in capsys.readouterr().err


def test_cli_default_segmenter_is_fallback_without_weights(tmp_path, capsys):
    root = write_dataset(tmp_path / "ds", n=1)
    assert main([str(root), "--weights", str(tmp_path / "none.h5"), "--no-progress"]) == 0
    assert "GrabCut fallback" in capsys.readouterr().out


def test_module_runs_as_a_command(tmp_path):
    root = write_dataset(tmp_path / "ds", n=1)
    proc = subprocess.run(
        [sys.executable, "-m", "dextr_core.evaluate", str(root), "--segmenter", "fallback"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"mIoU:\s+[0-9.]+", proc.stdout)
    assert "seconds per object" in proc.stdout


def test_find_pairs_warns_about_unpaired_and_duplicate_stems(tmp_path):
    from dextr_core.evaluate import find_pairs

    root = write_dataset(tmp_path / "ds", n=2)
    (root / "images" / "im0.png").write_bytes((root / "images" / "im0.jpg").read_bytes())
    (root / "masks" / "lonely.png").write_bytes((root / "masks" / "im1.png").read_bytes())
    pairs, warnings = find_pairs(root)
    assert [(p.id, p.image.name) for p in pairs] == [("im0", "im0.jpg"), ("im1", "im1.png")]
    assert any("share a stem" in w and "im0.png" in w for w in warnings)
    assert any(w.startswith("lonely.png: no image") for w in warnings)


def test_corrupt_image_is_skipped_with_its_reason(tmp_path, capsys):
    root = write_dataset(tmp_path / "ds", n=3)
    (root / "images" / "im1.png").write_bytes(b"not an image at all")
    truths = [np.asarray(Image.open(root / "masks" / f"im{i}.png")) > 127 for i in (0, 2)]
    result = evaluate(root, OracleSegmenter(truths))
    assert [o.id for o in result.objects] == ["im0", "im2"]
    assert len(result.skipped) == 1 and "im1" in result.skipped[0]
    assert "corrupt" in result.skipped[0]
    assert main([str(root), "--segmenter", "fallback", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "skipped im1" in captured.err
    assert "(1 skipped)" in captured.out


def test_next_click_lies_on_the_object_border_next_to_the_largest_error():
    truth = np.zeros((60, 80), bool)
    truth[10:50, 10:70] = True
    prediction = truth.copy()
    prediction[20:40, 50:70] = False  # a missed 20 x 20 square at the right border
    prediction[10:12, 10:12] = False  # and a small miss, which must not attract the click
    x, y = next_click(prediction, truth)
    assert truth[y, x]
    assert x == 69 and 20 <= y <= 40  # on the right border, level with the square


def test_next_click_for_taken_in_background_is_on_the_border_it_crossed():
    truth = np.zeros((60, 80), bool)
    truth[10:50, 10:40] = True
    prediction = truth.copy()
    prediction[10:50, 40:75] = True  # background right of the object taken in
    x, y = next_click(prediction, truth)
    assert (x, truth[y, x]) == (39, True)


def test_next_click_is_none_for_a_perfect_mask_and_respects_the_ignore_band():
    truth = np.zeros((30, 30), bool)
    truth[5:25, 5:25] = True
    assert next_click(truth, truth) is None
    wrong = truth.copy()
    wrong[5:25, 24] = False  # wrong only inside the band that does not count
    valid = np.ones_like(truth)
    valid[:, 23:26] = False
    assert next_click(wrong, truth, valid) is None


class ClickCountingSegmenter:
    """Returns the truth with a 40-pixel column cut away per missing click (fewer pixels wrong
    as clicks come), recording the points it was given."""

    name = "counting"
    is_fallback = False

    def __init__(self, truth):
        self.truth = truth
        self.calls = []

    def segment(self, image, points):
        self.calls.append(np.asarray(points).copy())
        mask = self.truth.copy()
        missing = max(0, 8 - len(points))
        xs = np.nonzero(self.truth.any(axis=0))[0]
        if missing:
            mask[:, xs[-1] - 2 * missing + 1 :] = False
        return mask


def test_extra_clicks_are_simulated_and_reported_after_4_6_and_8(tmp_path):
    root = write_dataset(tmp_path / "ds", n=1)
    truth = np.asarray(Image.open(root / "masks" / "im0.png")) > 127
    seg = ClickCountingSegmenter(truth)
    result = evaluate(root, seg, clicks=(4, 6, 8))
    assert [len(c) for c in seg.calls] == [4, 5, 6, 7, 8]
    np.testing.assert_array_equal(seg.calls[0], extreme_points(truth))
    for call in seg.calls[1:]:  # every extra click is an object pixel, appended at the end
        x, y = call[-1]
        assert truth[y, x]
    obj = result.objects[0]
    assert obj.click_ious[8] == 1.0
    assert obj.click_ious[4] < obj.click_ious[6] < obj.click_ious[8]
    assert obj.iou == obj.click_ious[4]
    assert result.miou_at(6) == obj.click_ious[6] and np.isnan(result.miou_at(5))


def test_clicks_stop_once_the_mask_is_perfect(tmp_path):
    root = write_dataset(tmp_path / "ds", n=1)
    truth = np.asarray(Image.open(root / "masks" / "im0.png")) > 127
    seg = OracleSegmenter([truth])
    result = evaluate(root, seg, clicks=(4, 8))
    assert len(seg.calls) == 1 and result.objects[0].click_ious == {4: 1.0, 8: 1.0}


def test_every_nth_pair_and_bad_click_counts(tmp_path):
    root = write_dataset(tmp_path / "ds", n=3)
    from dextr_core.fallback import GrabCutSegmenter

    result = evaluate(root, GrabCutSegmenter(edges="sobel"), every=2)
    assert [o.id for o in result.objects] == ["im0", "im2"]
    with pytest.raises(ValueError, match="4 extreme points"):
        evaluate(root, GrabCutSegmenter(edges="sobel"), clicks=(3,))
    with pytest.raises(ValueError, match="every"):
        evaluate(root, GrabCutSegmenter(edges="sobel"), every=0)


def test_cli_reports_miou_per_click_count(tmp_path, capsys):
    root = write_dataset(tmp_path / "ds", n=2)
    assert main([str(root), "--segmenter", "fallback", "--clicks", "4", "6", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"mIoU after 4 clicks: +\d\.\d{4}", out)
    assert re.search(r"mIoU after 6 clicks: +\d\.\d{4}", out)
    assert main([str(root), "--clicks", "2", "--no-progress"]) == 2
    assert "--clicks" in capsys.readouterr().err
