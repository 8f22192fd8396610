"""DextrSegmenter on a real-layout weights file with known (seeded) values, thread safety, and
load_segmenter's choice between DEXTR, the GrabCut fallback and a clear error."""

from __future__ import annotations

import importlib.util
import os
import threading

import numpy as np
import pytest

from dextr_core.weights import WeightsError

pytestmark = pytest.mark.slow  # builds the 49 M-parameter network twice

H, W = 120, 160
OBJECTS = [  # (x, y) extreme points of a few objects, one at the image border
    np.array([[20, 60], [100, 55], [60, 15], [65, 110]]),
    np.array([[0, 40], [70, 45], [30, 0], [35, 90]]),
    np.array([[90, 80], [159, 85], [120, 50], [125, 119]]),
    np.array([[40, 30], [140, 35], [90, 10], [95, 70], [60, 60]]),
]


@pytest.fixture(scope="module")
def reference(seeded_dextr):
    """A seeded network and its weights written in the published layout (conftest.py)."""
    return seeded_dextr


@pytest.fixture(scope="module")
def segmenter(reference):
    from dextr_core.segmenters import DextrSegmenter

    return DextrSegmenter(reference[1])


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    img[30:90, 40:120] = (220, 40, 40)  # a red block to segment
    return img


def test_name_and_protocol(segmenter):
    from dextr_core.segmenters import Segmenter

    assert segmenter.name == "DEXTR (seeded_dextr.h5)"
    assert segmenter.is_fallback is False
    assert isinstance(segmenter, Segmenter)


def test_network_output_matches_the_saved_model(segmenter, reference, image):
    """The file loads into a fresh network that computes what the original one did."""
    from dextr_core.processing import make_input

    model, _ = reference
    x, _ = make_input(image, OBJECTS[0])
    want = np.asarray(model(x[None], training=False))[0, :, :, 0]
    got = segmenter.predict_network(x)
    assert got.shape == (512, 512) and got.dtype == np.float32
    # same weights, same float32 graph; only the op scheduling differs (graph vs eager)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert want.std() > 1e-3  # the seeded network does not give a constant map


@pytest.mark.parametrize("runtime", ["graph", "openvino"])
def test_runtimes_agree_with_keras(reference, runtime):
    """The compiled TensorFlow graph and the optional OpenVINO runtime compute what Keras does."""
    from dextr_core.segmenters import make_forward

    if runtime == "openvino" and importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed (optional)")
    model, _ = reference
    x = np.random.default_rng(2).uniform(0, 255, (1, 512, 512, 4)).astype(np.float32)
    forward, used = make_forward(model, runtime)
    assert used == runtime
    np.testing.assert_allclose(forward(x), np.asarray(model(x, training=False)), atol=1e-5)


@pytest.mark.skipif(bool(os.environ.get("DEXTR_RUNTIME")), reason="DEXTR_RUNTIME is set")
def test_auto_runtime(segmenter):
    from dextr_core.runtime import probe_devices

    if any(d.kind == "gpu" for d in probe_devices("tensorflow")):
        expected, device = "graph", "GPU"
    else:
        expected = "openvino" if importlib.util.find_spec("openvino") else "graph"
        device = "CPU"
    assert segmenter.runtime == expected
    assert segmenter.device.kind == device.lower()
    # the sidebar's line names runtime, device and the precision that runs
    name = {"openvino": "OpenVINO", "graph": "TensorFlow graph"}[expected]
    assert segmenter.runtime_info.startswith(f"{name} on {device} (")
    precision = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}[segmenter.precision]
    assert f"), {precision} (" in segmenter.runtime_info


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
@pytest.mark.skipif(bool(os.environ.get("DEXTR_RUNTIME")), reason="DEXTR_RUNTIME is set")
@pytest.mark.skipif(bool(os.environ.get("DEXTR_PRECISION")), reason="DEXTR_PRECISION is set")
def test_the_precision_decision_is_measured_once_and_cached_with_the_export(
    reference, image, tmp_path, monkeypatch
):
    """On a CPU offering bfloat16 (faked here: this one may not) the check runs OpenVINO in
    float32 and bfloat16 on the check inputs, the decision lands next to the cached export, and
    a restart reads it instead of measuring again."""
    from dextr_core import ir_cache, precision, runtime, segmenters

    monkeypatch.setenv("DEXTR_CACHE_DIR", str(tmp_path))
    real_probe = runtime.probe_devices

    def amx_cpu(backend):
        devices = real_probe(backend)
        return [
            runtime.Device(d.framework, d.kind, d.name, ("bf16",))
            if d.framework == "openvino"
            else d
            for d in devices
        ]

    monkeypatch.setattr(runtime, "probe_devices", amx_cpu)
    few = precision.check_inputs()[:2]  # two check inputs keep the test short
    measured = []
    monkeypatch.setattr(precision, "check_inputs", lambda: measured.append(1) or few)
    first = segmenters.DextrSegmenter(reference[1], warm_up=False)
    assert measured == [1] and first.runtime == "openvino"
    decision = first.precision_decision
    if decision.checks:  # a CPU whose OpenVINO plugin runs bfloat16: measured
        (check,) = decision.checks
        assert check.precision == "bf16" and check.inputs == 2
        assert first.precision == ("bf16" if check.kept else "f32")
    else:  # this CPU cannot: the plugin would run float32 under the name bfloat16
        assert first.precision == "f32" and "bf16 unavailable" in decision.note
    assert first.runtime_info.startswith("OpenVINO on CPU (")
    key = ir_cache.cache_key(reference[1])
    entry = tmp_path / "openvino" / key
    assert sorted(p.name for p in entry.iterdir())[:2] == ["dextr.bin", "dextr.xml"]
    assert len(list(entry.glob("precision-*.json"))) == 1

    second = segmenters.DextrSegmenter(reference[1], warm_up=False)
    assert measured == [1]  # not measured again
    assert second.precision == first.precision and second.precision_decision.cached
    assert second.precision_decision.checks == first.precision_decision.checks
    assert second.runtime_info.endswith("decision cached)")
    # asked for float32 by name: exactly the float32 export, whatever was decided
    x = precision.check_inputs()[0]
    exact = segmenters.DextrSegmenter(reference[1], precision="f32", warm_up=False)
    assert exact.precision == "f32" and exact.precision_decision.checks == ()
    forward, _ = segmenters.make_forward(reference[0], "openvino")
    np.testing.assert_array_equal(exact.predict_network(x), forward(x[None])[0, :, :, 0])


def test_predict_and_segment(segmenter, image):
    points = OBJECTS[0]
    prob = segmenter.predict(image, points)
    mask = segmenter.segment(image, points)
    assert prob.shape == (H, W) and prob.dtype == np.float32
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    assert mask.shape == (H, W) and mask.dtype == bool
    np.testing.assert_array_equal(mask, prob > segmenter.threshold)
    # nothing outside the tight box of the points (x 20..100, y 15..110)
    assert not prob[:15].any() and not prob[111:].any()
    assert not prob[:, :20].any() and not prob[:, 101:].any()
    assert prob[15:111, 20:101].any()


def test_gray_image(segmenter, image):
    gray = image[:, :, 1]
    np.testing.assert_array_equal(
        segmenter.predict(gray, OBJECTS[1]),
        segmenter.predict(np.dstack([gray, gray, gray]), OBJECTS[1]),
    )


def test_bad_points_raise_value_error(segmenter, image):
    with pytest.raises(ValueError, match="four"):
        segmenter.segment(image, OBJECTS[0][:3])
    with pytest.raises(ValueError, match="outside the 160 x 120 image"):
        segmenter.segment(image, [[20, 60], [100, 55], [60, 15], [65, 400]])


def _predict_at_once(segmenter, image) -> dict[int, np.ndarray]:
    """``segmenter.predict`` of every one of OBJECTS, each from its own thread, all released
    together (a barrier); returns the maps by object index. Any thread's error fails the test."""
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(OBJECTS))

    def work(i):
        try:
            start.wait()
            results[i] = segmenter.predict(image, OBJECTS[i])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(OBJECTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors
    return results


def test_threads_give_the_same_results_as_one_thread(segmenter, image):
    sequential = [segmenter.predict(image, points) for points in OBJECTS]
    results = _predict_at_once(segmenter, image)
    for i, want in enumerate(sequential):
        np.testing.assert_allclose(results[i], want, atol=1e-6)
        np.testing.assert_array_equal(results[i] > 0.8, want > 0.8)


def test_threshold_is_checked(reference):
    from dextr_core.segmenters import DextrSegmenter

    with pytest.raises(ValueError, match="threshold"):
        DextrSegmenter(reference[1], threshold=1.5)


def test_load_segmenter_uses_dextr_when_the_file_exists(reference, monkeypatch):
    from dextr_core import segmenters

    built = []
    monkeypatch.setattr(
        segmenters, "DextrSegmenter", lambda path, threshold: built.append((path, threshold))
    )
    segmenters.load_segmenter(reference[1], threshold=0.7)
    assert built == [(reference[1], 0.7)]


def test_load_segmenter_falls_back_without_weights(tmp_path):
    from dextr_core.fallback import GrabCutSegmenter
    from dextr_core.segmenters import load_segmenter

    seg = load_segmenter(tmp_path / "dextr_pascal-sbd.h5")
    assert isinstance(seg, GrabCutSegmenter)
    assert seg.is_fallback is True


def test_load_segmenter_raises_for_a_corrupt_file(tmp_path):
    from dextr_core.segmenters import load_segmenter

    path = tmp_path / "dextr_pascal-sbd.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # HDF5 signature, nothing behind it
    with pytest.raises(WeightsError) as info:
        load_segmenter(path)
    assert str(path) in str(info.value)
    assert "python -m dextr_core.download pascal-sbd" in str(info.value)


def test_download_command_is_exported():
    import dextr_core

    assert dextr_core.DOWNLOAD_COMMAND == "python -m dextr_core.download pascal-sbd"


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
@pytest.mark.skipif(bool(os.environ.get("DEXTR_RUNTIME")), reason="DEXTR_RUNTIME is set")
def test_openvino_export_is_cached_and_reused(reference, image, tmp_path, monkeypatch):
    from dextr_core import ir_cache, segmenters
    from dextr_core.processing import make_input

    monkeypatch.setenv("DEXTR_CACHE_DIR", str(tmp_path))
    x, _ = make_input(image, OBJECTS[0])
    first = segmenters.DextrSegmenter(reference[1], warm_up=False)
    assert first.runtime == "openvino"
    key = ir_cache.cache_key(reference[1])
    assert ir_cache.lookup(key) == tmp_path / "openvino" / key / "dextr.xml"

    # a second start compiles the cached export: no export, no fidelity check, same output
    def must_not_run(*args):
        raise AssertionError("the cached export should have been used")

    with monkeypatch.context() as patch:
        patch.setattr(segmenters, "_export_openvino", must_not_run)
        patch.setattr(segmenters.DextrSegmenter, "_check_fidelity", must_not_run)
        second = segmenters.DextrSegmenter(reference[1], warm_up=False)
    assert second.runtime == "openvino"
    np.testing.assert_array_equal(second.predict_network(x), first.predict_network(x))

    # a damaged entry is dropped with a warning and the network exported again
    (tmp_path / "openvino" / key / "dextr.xml").write_text("<not an IR")
    with pytest.warns(RuntimeWarning, match="Ignoring the cached OpenVINO export"):
        third = segmenters.DextrSegmenter(reference[1], warm_up=False)
    assert third.runtime == "openvino"
    np.testing.assert_allclose(third.predict_network(x), first.predict_network(x), atol=1e-6)
    assert "<not an IR" not in ir_cache.lookup(key).read_text()[:100]


@pytest.mark.skipif(bool(os.environ.get("DEXTR_RUNTIME")), reason="DEXTR_RUNTIME is set")
def test_concurrent_clicks_share_one_forward_and_each_gets_its_own_mask(
    reference, segmenter, image
):
    """max_batch=4: four threads clicking at once are run as batched forwards (OpenVINO compiled
    for any batch, or the TensorFlow graph), each gets the mask it gets alone."""
    from dextr_core.segmenters import DextrSegmenter

    batched = DextrSegmenter(reference[1], max_batch=4, precision="f32", warm_up=False)
    assert batched.max_batch == 4 and "up to 4 concurrent clicks" in batched.runtime_info
    alone = [segmenter.predict(image, points) for points in OBJECTS]
    results = _predict_at_once(batched, image)
    assert sum(batched._batcher.batch_sizes) == len(OBJECTS)
    assert max(batched._batcher.batch_sizes) > 1  # at least two of them shared a forward
    for i, want in enumerate(alone):
        np.testing.assert_allclose(results[i], want, atol=1e-5)
        np.testing.assert_array_equal(results[i] > 0.8, want > 0.8)
    assert len({r.tobytes() for r in results.values()}) == len(OBJECTS)


def test_only_the_model_service_client_says_it_is_remote():
    from dextr_core import DextrSegmenter, GrabCutSegmenter, RemoteSegmenter

    assert RemoteSegmenter.is_remote is True  # it may stop answering: the pages offer local
    assert DextrSegmenter.is_remote is False and GrabCutSegmenter().is_remote is False
