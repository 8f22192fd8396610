"""Reduced precision chosen by measurement (dextr_core.precision): the check keeps a precision
whose masks and probabilities agree with float32 and that is faster, refuses one that differs
(in masks or in probabilities) or is not faster, and its decision is cached under the weights'
key. Forward functions made for the test stand in for the network (random weights do not agree,
and the full network takes seconds per forward); a small Keras network checks the mixed-precision
copy. Times come from an injected clock that the fake forwards advance."""

from __future__ import annotations

import json

import numpy as np
import pytest
from clocks import Clock

from dextr_core import ir_cache
from dextr_core import precision as prec

THRESHOLD = 0.8


def logit_map(batch: np.ndarray) -> np.ndarray:
    """A smooth, input-dependent 'network': logits from the heatmap and the red channel,
    ``(1, 512, 512, 4)`` -> ``(1, 512, 512, 1)``; strongly positive near the points."""
    heat = batch[..., 3:4] / 255.0
    red = (batch[..., 0:1] - 128.0) / 128.0
    return 12.0 * heat - 4.0 + 0.5 * red


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def forward(clock: Clock, cost: float, transform=lambda z: z, dtype=np.float32):
    def run(batch):
        clock.advance(cost)  # the fake forwards advance the clock by their cost per call
        z = transform(logit_map(batch).astype(dtype))
        return sigmoid(z.astype(np.float64)).astype(dtype).astype(np.float32)

    return run


@pytest.fixture(scope="module")
def inputs():
    """The real check inputs: the shipped sample photos with the fixed point sets."""
    xs = prec.check_inputs()
    assert len(xs) == 12, "six sample photos, two point sets each"
    return xs


def decide(offered, reference, candidates, inputs, clock, **kw):
    made = []

    def make_candidate(p):
        made.append(p)
        return candidates[p]

    decision, chosen = prec.choose_precision(
        offered,
        reference,
        make_candidate,
        threshold=THRESHOLD,
        inputs=lambda: inputs,
        clock=clock,
        **kw,
    )
    return decision, chosen, made


def test_the_check_points_are_a_fixed_rule_inside_the_photo():
    a = prec.check_points(480, 640)
    assert [p.tolist() for p in a] == [p.tolist() for p in prec.check_points(480, 640)]
    for points in a + prec.check_points(3000, 4000):
        assert points.shape == (4, 2)
    assert a[0].tolist() == [[128, 264], [512, 216], [288, 72], [352, 408]]
    xs = prec.check_inputs()
    assert all(x.shape == (512, 512, 4) and x.dtype == np.float32 for x in xs)
    assert len({x[..., :3].tobytes() for x in xs}) == len(xs)  # twelve distinct crops


def test_a_reduced_precision_whose_masks_agree_and_is_faster_is_kept(inputs):
    clock = Clock(0.0)
    reference = forward(clock, 1.0)
    half = forward(clock, 0.2, dtype=np.float16)  # the same 'network' computed in float16
    saved = []
    decision, chosen, made = decide(
        ("f16",), reference, {"f16": half}, inputs, clock, save=saved.append
    )
    assert decision.precision == "f16" and chosen is half and made == ["f16"]
    check = decision.check
    assert check.inputs == 12 and check.accurate and check.kept
    assert check.min_iou >= prec.MIN_IOU and check.max_difference <= 0.02
    assert check.max_difference > 0  # float16 did change the probabilities a little
    assert check.reference_s == pytest.approx(1.0) and check.candidate_s == pytest.approx(0.2)
    assert saved == [decision.to_json()]


def test_masks_that_move_at_the_threshold_are_refused_though_probabilities_stay_close(inputs):
    """The issue's case: probabilities moved by under 0.02, masks by more than IoU 0.995."""
    clock = Clock(0.0)
    # a 'network' whose map sits near the threshold over a wide band, shifted by 0.07 in logit
    flat = lambda z: 0.15 * z + 1.2  # noqa: E731
    reference = forward(clock, 1.0, flat)
    shifted = forward(clock, 0.2, lambda z: flat(z) + 0.07)
    decision, chosen, _ = decide(("bf16",), reference, {"bf16": shifted}, inputs, clock)
    assert decision.precision == "f32" and chosen is reference
    (check,) = decision.checks
    assert check.max_difference <= prec.MAX_PROBABILITY_DIFFERENCE
    assert check.min_iou < prec.MIN_IOU
    assert not check.accurate and not check.kept
    assert "bf16 differs" in decision.note


def test_probabilities_off_by_more_than_the_tolerance_are_refused_though_masks_agree(inputs):
    clock = Clock(0.0)
    reference = forward(clock, 1.0)
    # far from the threshold the probability moves by ~0.05, the masks stay identical
    drift = forward(clock, 0.2, lambda z: np.where(z < 0, z + 0.5, z))
    decision, _, _ = decide(("f16",), reference, {"f16": drift}, inputs, clock)
    (check,) = decision.checks
    assert check.min_iou == 1.0 and check.max_difference > prec.MAX_PROBABILITY_DIFFERENCE
    assert decision.precision == "f32"


def test_an_accurate_precision_that_is_not_faster_is_refused(inputs):
    clock = Clock(0.0)
    reference = forward(clock, 1.0)
    slow = forward(clock, 1.5, dtype=np.float16)  # AVX512-BF16 without AMX: slower than f32
    decision, chosen, _ = decide(("bf16",), reference, {"bf16": slow}, inputs, clock)
    (check,) = decision.checks
    assert check.accurate and not check.kept
    assert decision.precision == "f32" and chosen is reference
    assert "not faster" in decision.note


def test_the_first_offered_precision_that_passes_is_used_and_every_try_is_reported(inputs):
    clock = Clock(0.0)
    reference = forward(clock, 1.0)
    candidates = {
        "f16": forward(clock, 0.2, lambda z: z + 3.0),  # overflowed / wrong
        "bf16": forward(clock, 0.3, dtype=np.float16),
    }
    decision, chosen, made = decide(("f16", "bf16"), reference, candidates, inputs, clock)
    assert made == ["f16", "bf16"]
    assert decision.precision == "bf16" and chosen is candidates["bf16"]
    assert [c.precision for c in decision.checks] == ["f16", "bf16"]
    assert [c.kept for c in decision.checks] == [False, True]


def test_a_precision_the_runtime_cannot_build_here_is_refused_and_the_next_is_tried(inputs):
    clock = Clock(0.0)
    reference = forward(clock, 1.0)
    half = forward(clock, 0.3, dtype=np.float16)

    def make_candidate(p):
        if p == "bf16":  # OpenVINO's plugin would quietly run float32 on this CPU
            raise ValueError("OpenVINO cannot run DEXTR in bfloat16 on this CPU")
        return half

    decision, chosen = prec.choose_precision(
        ("bf16", "f16"),
        reference,
        make_candidate,
        threshold=THRESHOLD,
        inputs=lambda: inputs,
        clock=clock,
    )
    assert decision.precision == "f16" and chosen is half
    decision, chosen = prec.choose_precision(
        ("bf16",),
        reference,
        make_candidate,
        threshold=THRESHOLD,
        inputs=lambda: inputs,
        clock=clock,
    )
    assert decision.precision == "f32" and chosen is reference and decision.checks == ()
    assert "bf16 unavailable (OpenVINO cannot run DEXTR in bfloat16" in decision.note


def test_nothing_is_measured_when_the_device_offers_no_faster_precision():
    def must_not_run(*args):
        raise AssertionError("nothing should be measured")

    decision, chosen = prec.choose_precision(
        (), must_not_run, must_not_run, threshold=THRESHOLD, inputs=must_not_run
    )
    assert decision.precision == "f32" and chosen is must_not_run and decision.checks == ()


def test_the_decision_is_cached_under_the_weights_key_and_made_again_for_other_weights(
    inputs, tmp_path, monkeypatch
):
    monkeypatch.setenv("DEXTR_CACHE_DIR", str(tmp_path / "cache"))
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    one.write_bytes(b"weights one")
    two.write_bytes(b"weights two")
    tag = ir_cache.decision_tag(runtime="openvino", device="CPU (Xeon)", threshold=THRESHOLD)
    clock = Clock(0.0)
    reference = forward(clock, 1.0)
    half = forward(clock, 0.2, dtype=np.float16)
    measured = []

    def run(weights):
        key = ir_cache.cache_key(weights)

        def check_set():
            measured.append(weights.name)
            return inputs

        decision, chosen = prec.choose_precision(
            ("f16",),
            reference,
            lambda p: half,
            threshold=THRESHOLD,
            inputs=check_set,
            load=lambda: ir_cache.lookup_decision(key, tag),
            save=lambda data: ir_cache.store_decision(key, tag, data, {"note": "test"}),
            clock=clock,
        )
        return key, decision, chosen

    key, first, _ = run(one)
    assert measured == ["one.h5"] and not first.cached
    stored = tmp_path / "cache" / "openvino" / key / f"precision-{tag}.json"
    assert json.loads(stored.read_text())["decision"]["precision"] == "f16"
    _, second, chosen = run(one)  # a restart with the same weights: read, not measured
    assert measured == ["one.h5"] and second.cached and chosen is half
    assert second.precision == "f16" and second.checks == first.checks
    _, third, _ = run(two)  # other weights: another key, measured again
    assert measured == ["one.h5", "two.h5"] and not third.cached
    # a damaged decision file is measured again, not trusted
    stored.write_text("{not json")
    _, fourth, _ = run(one)
    assert measured == ["one.h5", "two.h5", "one.h5"] and not fourth.cached
    assert json.loads(stored.read_text())["decision"]["precision"] == "f16"  # and rewritten


def test_a_decision_cache_that_cannot_be_written_only_warns(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DEXTR_CACHE_DIR", str(blocker))
    with pytest.warns(RuntimeWarning, match="checks the precision again"):
        assert ir_cache.store_decision("k1", "t1", {"precision": "f32", "checks": []}) is None
    assert ir_cache.lookup_decision("k1", "t1") is None


def test_a_failed_decision_write_leaves_the_old_decision(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("DEXTR_CACHE_DIR", str(tmp_path))
    old = {"precision": "bf16", "checks": [], "note": ""}
    ir_cache.store_decision("k1", "t1", old)

    def no_space(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.warns(RuntimeWarning, match="No space left"):
        ir_cache.store_decision("k1", "t1", {"precision": "f32", "checks": [], "note": ""})
    assert ir_cache.lookup_decision("k1", "t1") == old
    assert [p.name for p in (tmp_path / "openvino" / "k1").iterdir()] == ["precision-t1.json"]


def test_the_precision_comes_from_the_argument_or_dextr_precision(monkeypatch):
    monkeypatch.delenv("DEXTR_PRECISION", raising=False)
    assert prec.requested_precision("auto") == "auto"
    assert prec.requested_precision("bf16") == "bf16"
    monkeypatch.setenv("DEXTR_PRECISION", "F32")
    assert prec.requested_precision("auto") == "f32"
    assert prec.requested_precision("f16") == "f16"  # an explicit argument wins
    monkeypatch.setenv("DEXTR_PRECISION", "int8")
    with pytest.raises(ValueError, match="DEXTR_PRECISION must be one of auto, f32, bf16, f16"):
        prec.requested_precision("auto")
    with pytest.raises(ValueError, match="precision must be one of"):
        prec.requested_precision("half")


def test_the_reduced_copy_computes_in_bfloat16_with_the_same_weights():
    import keras

    def small():
        inputs = keras.Input((16, 16, 4))
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
        x = keras.layers.BatchNormalization()(x)
        return keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(x))

    keras.utils.set_random_seed(3)
    model = small()
    before = keras.config.dtype_policy().name
    copy = prec.reduced_model(model, "bf16", build=small)
    assert keras.config.dtype_policy().name == before  # the process-wide policy is restored
    assert copy.layers[1].compute_dtype == "bfloat16" and copy.layers[1].dtype == "float32"
    for a, b in zip(model.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).uniform(0, 1, (1, 16, 16, 4)).astype(np.float32)
    want = np.asarray(model(x), dtype=np.float32)
    got = np.asarray(keras.ops.convert_to_numpy(copy(x)), dtype=np.float32)
    assert 0 < np.abs(got - want).max() < 0.05  # bfloat16 rounding, nothing worse
