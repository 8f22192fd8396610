"""SAM checkpoints behind the four clicks (issue 21): recognised by contents, masks equal to the
reference ``SamPredictor`` on real photos, the embedding computed once per photo, refinement
clicks, refused files, the OpenVINO encoder and its cache, the app on a SAM file.

The models are seeded, built with the reference code (tests/sam_reference.py) and saved as state
dicts in the published layout, once per module: a MobileSAM (fast) and a SAM ViT-B (its encoder
takes ~5-50 s per photo on these CPUs, so its tests are ``slow``).

Fidelity rule, per object: mask IoU with the reference >= 0.98 (it is 1.0 in practice) and
logits within ``LOGIT_TOLERANCE`` x max(1, largest |logit|) of the reference's (PyTorch: the same
operations, exact; OpenVINO: float32 kernels that sum in another order, ~1e-6 measured).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
for _package in ("segment_anything", "mobile_sam"):  # imported through sam_reference
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"{_package} is not installed (requirements-dev.txt)", allow_module_level=True)

import sam_reference  # noqa: E402  (tests/: the reference packages with their stand-ins)

from dextr_core.points import extreme_points  # noqa: E402
from dextr_core.weights import WeightsError  # noqa: E402

#: Largest logit difference from the reference accepted, relative to max(1, largest |logit|).
LOGIT_TOLERANCE = 1e-3
MIN_IOU = 0.98
#: Real photos (a portrait one from Berkeley, a landscape one from COCO MVal), read in place.
PHOTOS = (("berkeley", "101085"), ("coco_mval", "airplane00_000000281693"))


@pytest.fixture(scope="module")
def photos(evaldata_dir):
    """[(image uint8 (H, W, 3), extreme points (4, 2))] of :data:`PHOTOS`."""
    found = []
    for dataset, stem in PHOTOS:
        folder = evaldata_dir / dataset
        image = np.asarray(Image.open(folder / "images" / f"{stem}.jpg").convert("RGB"))
        truth = np.asarray(Image.open(folder / "masks" / f"{stem}.png").convert("L")) > 128
        found.append((image, extreme_points(truth).astype(np.float64)))
    return found


@pytest.fixture(scope="module")
def mobile(tmp_path_factory):
    """(checkpoint path, reference MobileSAM model) — seeded, built once for the module."""
    path = tmp_path_factory.mktemp("mobile") / "mobile_sam.pt"
    return path, sam_reference.seeded_checkpoint("mobile_sam", path)


@pytest.fixture(scope="module")
def mobile_segmenter(mobile):
    from dextr_core.sam import SamSegmenter

    return SamSegmenter(mobile[0], runtime="torch", warm_up=False)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEXTR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DEXTR_SAM_RUNTIME", raising=False)


_PREDICTORS: dict = {}


def reference_logits(model, image, points, prompt="box+points"):
    """The reference SamPredictor's logits ``(H, W)`` for the prompt our segmenter builds (one
    predictor per model and photo, so each photo is encoded once by the reference too)."""
    key = (id(model), image.shape, image.tobytes()[::9973])
    predictor = _PREDICTORS.get(key)
    if predictor is None:
        package = sam_reference.mobile_sam() if type(model).__module__.startswith("mobile_sam") \
            else sam_reference.segment_anything()
        predictor = _PREDICTORS[key] = package.SamPredictor(model)
        predictor.set_image(image)
    box = np.array([*points[:4].min(axis=0), *points[:4].max(axis=0)])
    coords = None if prompt == "box" else points
    labels = None if prompt == "box" else np.ones(len(points))
    logits, _, _ = predictor.predict(point_coords=coords, point_labels=labels,
                                     box=None if prompt == "points" else box,
                                     multimask_output=False, return_logits=True)
    return logits[0]


def assert_faithful(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Per-object fidelity rule (module docstring); returns (IoU, relative logit difference)."""
    want, got = reference > 0, ours > 0
    assert 0.01 < want.mean() < 0.99, "the seeded model must give a mask that means something"
    iou = (want & got).sum() / (want | got).sum()
    difference = float(np.abs(ours - reference).max() / max(1.0, np.abs(reference).max()))
    assert iou >= MIN_IOU and difference <= LOGIT_TOLERANCE, (iou, difference)
    print(f"fidelity: IoU {iou:.4f}, max |dlogit| {difference:.2g} (relative), "
          f"logits in [{reference.min():.3g}, {reference.max():.3g}]")  # shown with pytest -s
    return float(iou), difference


# ---- recognised by contents ----------------------------------------------------------------------


def test_a_mobile_sam_file_is_recognised_by_its_contents_whatever_its_name(mobile, tmp_path,
                                                                          monkeypatch):
    from dextr_core.sam import SamSegmenter
    from dextr_core.segmenters import Segmenter, load_segmenter

    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(mobile[0].read_bytes())
    monkeypatch.setenv("DEXTR_SAM_RUNTIME", "torch")
    segmenter = load_segmenter(renamed, sam_prompt="box")
    assert isinstance(segmenter, SamSegmenter) and isinstance(segmenter, Segmenter)
    assert segmenter.variant == "mobile_sam" and segmenter.prompt == "box"
    assert segmenter.name == "MobileSAM (weights.bin)" and not segmenter.is_fallback
    assert "PyTorch on CPU" in segmenter.runtime_info
    assert segmenter.encoder_runs == 0  # the warm-up run is not a photo


def test_segment_anything_modeling_loads_in_a_process_without_torchvision():
    """The app's process has no stand-ins: where torchvision does not import (CPU-only torch),
    sam_modeling() still gives segment_anything's networks."""
    import subprocess
    import sys

    code = ("import sys; from dextr_core.sam import sam_modeling; m = sam_modeling(); "
            "print(m.Sam.__name__, m.MaskDecoder.__name__, 'torchvision' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=sam_reference.REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[:2] == ["Sam", "MaskDecoder"]


def test_the_vit_variants_are_told_apart_by_the_encoder_width(tmp_path):
    import torch

    from dextr_core.sam import VIT_WIDTHS, read_checkpoint

    for width, variant in VIT_WIDTHS.items():
        state = {"image_encoder.patch_embed.proj.weight": torch.zeros(width, 3, 16, 16),
                 "prompt_encoder.x": torch.zeros(1), "mask_decoder.y": torch.zeros(1)}
        path = tmp_path / f"{variant}.pth"
        torch.save(state, path)
        assert read_checkpoint(path)[0] == variant


# ---- faithful to the reference -----------------------------------------------------------------


def test_mobile_sam_masks_equal_the_reference_predictor_on_real_photos(mobile, mobile_segmenter,
                                                                       photos):
    for image, points in photos:
        assert_faithful(mobile_segmenter.logits(image, points),
                        reference_logits(mobile[1], image, points))


def test_box_only_and_points_only_prompts_equal_the_reference(mobile, mobile_segmenter, photos):
    image, points = photos[0]
    try:
        for prompt in ("box", "points"):
            mobile_segmenter.prompt = prompt
            assert_faithful(mobile_segmenter.logits(image, points),
                            reference_logits(mobile[1], image, points, prompt))
    finally:
        mobile_segmenter.prompt = "box+points"


def test_clicks_after_the_fourth_are_further_positive_points(mobile, mobile_segmenter, photos):
    image, points = photos[0]
    height, width = image.shape[:2]
    more = np.vstack([points, [[points[:, 0].mean(), points[:, 1].mean()],
                               [points[0, 0] + 0.1 * width, points[2, 1] + 0.1 * height]]])
    coords, labels, box = mobile_segmenter.prompt_arrays(more)
    assert coords.tolist() == more.tolist() and labels.tolist() == [1] * 6
    assert box.tolist() == [*points.min(axis=0), *points.max(axis=0)]  # the first four's box
    refined = mobile_segmenter.logits(image, more)
    assert_faithful(refined, reference_logits(mobile[1], image, more))
    assert not np.array_equal(refined > 0, mobile_segmenter.segment(image, points))
    probability = mobile_segmenter.predict(image, more)
    assert probability.dtype == np.float32 and ((probability > 0.5) == (refined > 0)).all()


@pytest.mark.slow
def test_vit_b_masks_equal_the_reference_predictor_on_a_real_photo(tmp_path_factory, photos):
    from dextr_core.sam import SamSegmenter

    path = tmp_path_factory.mktemp("vit_b") / "sam_vit_b_01ec64.pth"
    model = sam_reference.seeded_checkpoint("vit_b", path)
    segmenter = SamSegmenter(path, runtime="torch", warm_up=False)
    assert segmenter.variant == "vit_b" and segmenter.name == "SAM ViT-B (sam_vit_b_01ec64.pth)"
    image, points = photos[0]
    assert_faithful(segmenter.logits(image, points), reference_logits(model, image, points))


# ---- the embedding is computed once ------------------------------------------------------------


def test_the_encoder_runs_once_for_two_objects_on_one_photo(mobile_segmenter, photos):
    image, points = photos[0]
    photo = np.ascontiguousarray(image[::-1])  # a photo this segmenter has not seen
    before = mobile_segmenter.encoder_runs
    mobile_segmenter.prepare(photo)  # what the app does when the photo opens
    mobile_segmenter.segment(photo, points)
    mobile_segmenter.segment(photo.copy(), points[::-1] + 3)  # another object, decoded again
    assert mobile_segmenter.encoder_runs == before + 1


def test_embeddings_of_the_last_few_photos_are_kept_and_older_ones_dropped(mobile):
    from dextr_core.sam import SamSegmenter

    segmenter = SamSegmenter(mobile[0], runtime="torch", warm_up=False, max_photos=2)
    encoded = []
    segmenter._encode = lambda x: encoded.append(x) or np.zeros((1, 256, 64, 64), np.float32)
    photos = [np.full((40, 60, 3), value, np.uint8) for value in (10, 20, 30)]
    points = [[5, 20], [50, 20], [30, 5], [30, 35]]
    for photo in photos[:2] + photos[:2]:
        segmenter.segment(photo, points)
    assert len(encoded) == 2
    segmenter.segment(photos[2], points)  # a third photo: the least recently used one goes
    segmenter.segment(photos[1], points)
    assert len(encoded) == 3
    segmenter.segment(photos[0], points)
    assert len(encoded) == 4 and len(segmenter._embeddings) == 2


def test_two_clicks_at_once_on_a_new_photo_encode_it_once(mobile):
    import threading
    import time

    from dextr_core.sam import SamSegmenter

    segmenter = SamSegmenter(mobile[0], runtime="torch", warm_up=False)
    encoded = []

    def slow_encoder(x):
        encoded.append(x)
        time.sleep(0.5)  # both threads arrive while the first one encodes
        return np.zeros((1, 256, 64, 64), np.float32)

    segmenter._encode = slow_encoder
    photo = np.full((40, 60, 3), 7, np.uint8)
    masks = []
    threads = [threading.Thread(target=lambda: masks.append(segmenter.segment(
        photo, [[5, 20], [50, 20], [30, 5], [30, 35]]))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(encoded) == 1 and len(masks) == 2 and (masks[0] == masks[1]).all()


def test_refused_points_say_why_and_cost_no_encoder_run(mobile_segmenter, photos):
    image, _ = photos[0]
    runs = mobile_segmenter.encoder_runs
    with pytest.raises(ValueError, match="at least four"):
        mobile_segmenter.segment(image, [[1, 1], [5, 5], [9, 9]])
    with pytest.raises(ValueError, match="outside"):
        mobile_segmenter.segment(image, [[1, 1], [5, 5], [9, 9], [9000, 9]])
    assert mobile_segmenter.encoder_runs == runs


# ---- refused files -------------------------------------------------------------------------------


def test_corrupt_and_foreign_files_are_refused_with_a_message_naming_what_was_found(mobile,
                                                                                   tmp_path):
    import torch

    from dextr_core.segmenters import load_segmenter

    whole = mobile[0].read_bytes()
    cut = tmp_path / "mobile_sam.pt"
    cut.write_bytes(whole[: len(whole) // 2])
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 3, 3), "fc.bias": torch.zeros(2)}, foreign)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    html = tmp_path / "page.pth"
    html.write_text("<!DOCTYPE html><html><body>Not found</body></html>")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    expected = {
        cut: "damaged ZIP archive",
        foreign: "not a SAM checkpoint: it has no image_encoder / prompt_encoder / mask_decoder",
        listed: "holding list, not a state dict",
        html: "it is an HTML page",
        empty: "it is an empty file",
    }
    for path, words in expected.items():
        with pytest.raises(WeightsError) as info:
            load_segmenter(path)
        message = str(info.value)
        assert words in message and str(path) in message, message
        assert "python -m dextr_core.download mobile-sam" in message
    with pytest.raises(WeightsError, match="conv1, fc"):
        load_segmenter(foreign)


def test_without_torch_a_sam_file_gets_the_install_command(mobile):
    """A DEXTR user's install (no torch): a SAM file is named as such, with what to install."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from dextr_core.segmenters import load_segmenter\n"
            "from dextr_core.weights import WeightsError\n"
            "try:\n    load_segmenter(sys.argv[1])\n"
            "except WeightsError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(mobile[0])], capture_output=True,
                          text=True, timeout=300, cwd=sam_reference.REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "PyTorch is not installed" in done.stdout and 'pip install ".[sam]"' in done.stdout


def test_a_sam_file_whose_shapes_do_not_fit_is_refused(mobile, tmp_path):
    import torch

    from dextr_core.segmenters import load_segmenter

    state = torch.load(mobile[0], weights_only=True)
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 128)
    path = tmp_path / "mobile_sam.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="looks like a MobileSAM checkpoint but does not fit"):
        load_segmenter(path)


def test_sam_prompt_is_checked_in_the_config(tmp_path):
    from dextr_core.config import ConfigError, load_config

    cfg = tmp_path / "anno_cfg.yml"
    (tmp_path / "src").mkdir()
    body = "required:\n  source: src\n  destination: out\noptional:\n"
    cfg.write_text(body + "  sam_prompt: box\n")
    assert load_config(cfg).sam_prompt == "box"
    cfg.write_text(body + "  sam_prompt: boxes\n")
    with pytest.raises(ConfigError, match="optional.sam_prompt: must be one of box\\+points"):
        load_config(cfg)


# ---- runtime -----------------------------------------------------------------------------------


def test_the_runtime_choice_prefers_a_gpu_then_openvino():
    from dextr_core.runtime import Device
    from dextr_core.sam import choose_runtime

    cpu, gpu = Device("torch", "cpu", "EPYC"), Device("torch", "gpu", "H200", ("f16", "bf16"))
    openvino = Device("openvino", "cpu", "EPYC")
    assert choose_runtime("auto", [gpu, cpu, openvino]).device == gpu
    assert choose_runtime("auto", [cpu, openvino]).runtime == "openvino"
    assert choose_runtime("auto", [cpu]).device == cpu
    with pytest.raises(ValueError, match="needs the openvino package"):
        choose_runtime("openvino", [cpu])
    with pytest.raises(ValueError, match="one of auto, openvino, torch"):
        choose_runtime("graph", [cpu])


@pytest.mark.slow
def test_the_openvino_encoder_matches_the_reference_and_is_converted_once(mobile, photos,
                                                                         monkeypatch):
    pytest.importorskip("openvino")
    from dextr_core import ir_cache, sam

    first = sam.SamSegmenter(mobile[0], runtime="openvino", warm_up=False)
    assert first.runtime == "openvino" and first.runtime_info.startswith("OpenVINO on CPU")
    assert ir_cache.lookup(sam._cache_key(mobile[0]), sam.IR_FILES) is not None

    def no_conversion(*args):
        raise AssertionError("the cached encoder should have been used")

    monkeypatch.setattr(sam, "_export_encoder", no_conversion)
    again = sam.SamSegmenter(mobile[0], runtime="openvino", warm_up=False)
    for image, points in photos:
        assert_faithful(again.logits(image, points), reference_logits(mobile[1], image, points))


# ---- the app -------------------------------------------------------------------------------------


def test_the_app_runs_on_a_sam_file(mobile, tmp_path, monkeypatch):
    """AppTest (tests/test_app.py's helpers) with ``optional.weights`` naming a MobileSAM file:
    the sidebar names it, the accepted object is the reference's mask for the photo and clicks,
    and the object records the engine."""
    import test_app as app

    (tmp_path / "src").mkdir()
    Image.fromarray(app._photo(1)).save(tmp_path / "src" / "a.png")
    cfg = tmp_path / "anno_cfg.yml"
    cfg.write_text("required:\n  source: src\n  destination: out\n"
                   f"optional:\n  labels: [disc]\n  weights: {mobile[0]}\n")
    monkeypatch.setenv("ANNO_CFG", str(cfg))
    monkeypatch.setenv("DEXTR_SAM_RUNTIME", "torch")
    clicks = np.array(app.DISC_CLICKS, dtype=np.float64)
    expected = reference_logits(mobile[1], app._photo(1), clicks) > 0
    assert 0.01 < expected.mean() < 0.99

    at = app._app(timeout=300)
    assert not at.exception
    assert "MobileSAM (mobile_sam.pt)" in app._texts(at.success)
    app._accept(at, app.DISC_CLICKS, "disc")
    (obj,) = app._store(tmp_path).objects("a.png")
    saved = np.asarray(Image.open(app.object_mask_path(tmp_path / "out", "a.png", obj.object_id)))
    assert ((saved > 0) == expected).all()
    assert obj.engine == "MobileSAM (mobile_sam.pt)"


def test_dextr_evaluate_runs_a_sam_file_with_the_chosen_prompt(mobile, tmp_path, monkeypatch,
                                                               capsys):
    """How a team with real weights compares SAM with DEXTR: ``dextr-evaluate --weights``."""
    import test_app as app

    from dextr_core.evaluate import main

    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    Image.fromarray(app._photo(1)).save(tmp_path / "images" / "disc.png")
    Image.fromarray(app._disc_mask().astype(np.uint8) * 255).save(tmp_path / "masks" / "disc.png")
    monkeypatch.setenv("DEXTR_SAM_RUNTIME", "torch")
    assert main([str(tmp_path), "--weights", str(mobile[0]), "--sam-prompt", "box",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "segmenter: MobileSAM (mobile_sam.pt)" in out and "objects:   1" in out


@pytest.mark.slow
def test_a_reduced_precision_is_used_only_where_the_precision_check_passes(mobile, tmp_path,
                                                                          monkeypatch):
    """A device that offers bfloat16 (here torch's CPU, told so): the check of
    dextr_core.precision measures whole masks against float32 on the sample photos (one photo
    here) and keeps bfloat16 only if it is accurate and faster; the decision is cached."""
    from dextr_core import precision, sam
    from dextr_core.runtime import Device

    photos = tmp_path / "samples"
    photos.mkdir()
    Image.open(precision.SAMPLES / "coffee.jpg").save(photos / "coffee.jpg")
    monkeypatch.setattr(precision, "SAMPLES", photos)
    monkeypatch.setattr(sam, "sam_devices", lambda: [Device("torch", "cpu", "test CPU", ("bf16",))])
    first = sam.SamSegmenter(mobile[0], runtime="torch", warm_up=False)
    decision = first.precision_decision
    (check,) = decision.checks
    assert check.precision == "bf16" and check.inputs == 1
    assert first.precision == ("bf16" if check.kept else "f32")
    assert check.kept == (check.accurate and check.candidate_s < check.reference_s)
    assert check.accurate == (check.min_iou >= precision.MIN_IOU
                              and check.max_difference <= precision.MAX_PROBABILITY_DIFFERENCE)
    again = sam.SamSegmenter(mobile[0], runtime="torch", warm_up=False)
    assert again.precision == first.precision and again.precision_decision.cached
