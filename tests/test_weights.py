"""Loading the published DEXTR HDF5 layout: every layer gets exactly its values; bad files fail
with a message naming the file, the layer and what to do.

The files are written here by hand with h5py from ``tests/data/weights-manifest.json`` (a copy of
``../shared/dextr/weights-manifest.json``: the published layer order and weight names),
independently of the loader under test.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # builds the 49 M-parameter network

# A few weightless layers of the published files, interleaved into layer_names like the originals.
WEIGHTLESS = ["input_1", "zero_padding2d_1", "activation_1", "max_pooling2d_1", "add_1"]


def known_value(weight_index: int, shape) -> np.ndarray:
    """Distinct values per weight (an offset of 5000 per weight + an arange modulo a prime),
    exact in float32."""
    size = int(np.prod(shape))
    values = (np.arange(size, dtype=np.int64) % 4099 + 5000 * weight_index).astype(np.float32)
    return values.reshape(shape)


def write_published_layout(path, manifest, *, suffix="", mutate=None) -> dict:
    """Write a Keras 2 ``save_weights`` file in manifest (file) order; return the expected
    ``{layer: [arrays]}``. ``suffix`` is appended to the weight names' layer part (``conv1_1``);
    ``mutate(name, arrays)`` may change a layer's arrays before writing."""
    manifest_names = {name: weight_names for name, weight_names, _ in manifest}
    expected = {}
    layer_names = []
    weight_index = 0
    for i, (name, _, shapes) in enumerate(manifest):
        if i < len(WEIGHTLESS):
            layer_names.append(WEIGHTLESS[i])
        arrays = []
        for shape in shapes:
            arrays.append(known_value(weight_index, shape))
            weight_index += 1
        if mutate is not None:
            arrays = mutate(name, arrays)
        expected[name] = arrays
        layer_names.append(name)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in layer_names], dtype="S")
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.5"
        for name in layer_names:
            group = f.create_group(name)
            if name not in expected:
                group.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            names = [w.replace(name + "/", name + suffix + "/", 1) for w in manifest_names[name]]
            group.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for weight_name, array in zip(names, expected[name], strict=True):
                group.create_dataset(weight_name, data=array)
    return expected


@pytest.fixture(autouse=True)
def remove_written_files(tmp_path):
    """Each file here is ~196 MB and pytest keeps the last runs' tmp folders: delete them."""
    yield
    for path in tmp_path.glob("*.h5*"):
        path.unlink()


@pytest.fixture(scope="module")
def model():
    from dextr_core.network import build_dextr

    return build_dextr()


@pytest.fixture(scope="module")
def published_file(tmp_path_factory, spec_manifest):
    path = tmp_path_factory.mktemp("weights") / "dextr_pascal-sbd.h5"
    expected = write_published_layout(path, spec_manifest)
    yield path, expected
    path.unlink()


def test_model_has_the_published_layers(model, spec_manifest):
    built = {layer.name: [tuple(w.shape) for w in layer.weights] for layer in model.layers}
    for name, _, shapes in spec_manifest:
        assert built[name] == [tuple(s) for s in shapes], name
    assert sum(1 for layer in model.layers if layer.weights) == len(spec_manifest) == 219


def test_layers_match_by_name_not_position(model, tmp_path, spec_manifest):
    """A file whose layers come in reverse order still loads each layer's own values."""
    from dextr_core.weights import load_dextr_weights

    path = tmp_path / "reversed.h5"
    expected = write_published_layout(path, spec_manifest[::-1])
    load_dextr_weights(model, path)
    for name in ("conv1", "bn_conv1", "class_psp_1_conv", "class_psp_1_bn", "class_psp_final_conv"):
        for got, want in zip(model.get_layer(name).get_weights(), expected[name], strict=True):
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_every_layer_gets_exactly_its_values(model, published_file):
    from dextr_core.weights import load_dextr_weights

    path, expected = published_file
    load_dextr_weights(model, path)
    checked = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        got = [np.asarray(w) for w in layer.get_weights()]
        want = expected[layer.name]
        assert len(got) == len(want), layer.name
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w, err_msg=layer.name)
        checked += 1
    assert checked == 219


def test_weight_names_with_suffixes_load_by_order(model, tmp_path, spec_manifest):
    from dextr_core.weights import load_dextr_weights

    path = tmp_path / "suffixed.h5"

    def shift(name, arrays):  # values differ from the other tests' file
        return [a + 1.0 for a in arrays]

    expected = write_published_layout(path, spec_manifest, suffix="_1", mutate=shift)
    with h5py.File(path) as f:
        assert list(f["conv1"].attrs["weight_names"]) == [b"conv1_1/kernel:0"]
    load_dextr_weights(model, path)
    bn = model.get_layer("bn_conv1").get_weights()
    for got, want in zip(bn, expected["bn_conv1"], strict=True):
        np.testing.assert_array_equal(got, want)
    final = model.get_layer("class_psp_final_conv").get_weights()
    np.testing.assert_array_equal(final[1], expected["class_psp_final_conv"][1])


def test_wrong_shape_names_layer_and_shapes_and_keeps_model(model, tmp_path, spec_manifest):
    from dextr_core.weights import WeightsError, load_dextr_weights

    path = tmp_path / "wrong_shape.h5"

    def shrink(name, arrays):
        if name == "res4b_branch2b":
            return [np.zeros((3, 3, 256, 128), np.float32)]
        return arrays

    write_published_layout(path, spec_manifest, mutate=shrink)
    before = model.get_layer("conv1").get_weights()[0].copy()
    with pytest.raises(WeightsError) as info:
        load_dextr_weights(model, path)
    message = str(info.value)
    assert "res4b_branch2b" in message
    assert "(3, 3, 256, 256)" in message and "(3, 3, 256, 128)" in message
    assert str(path) in message
    assert "python -m dextr_core.download pascal-sbd" in message and "models/" in message
    # checked before anything is set: the model is untouched
    np.testing.assert_array_equal(model.get_layer("conv1").get_weights()[0], before)


def test_missing_layer_is_named(model, tmp_path, spec_manifest):
    from dextr_core.weights import WeightsError, load_dextr_weights

    path = tmp_path / "missing_layer.h5"
    write_published_layout(path, [m for m in spec_manifest if m[0] != "class_psp_3_bn"])
    with pytest.raises(WeightsError, match="no layer 'class_psp_3_bn'"):
        load_dextr_weights(model, path)


def test_truncated_file(model, published_file, tmp_path):
    from dextr_core.weights import WeightsError, load_dextr_weights

    source, _ = published_file
    path = tmp_path / "truncated.h5"
    with open(source, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read(source.stat().st_size // 2))
    with pytest.raises(WeightsError) as info:
        load_dextr_weights(model, path)
    message = str(info.value)
    assert str(path) in message and "truncated" in message
    assert "python -m dextr_core.download pascal-sbd" in message


def test_not_hdf5(model, tmp_path):
    from dextr_core.weights import WeightsError, load_dextr_weights

    path = tmp_path / "dextr_pascal-sbd.h5"
    path.write_text("<html><body>404 Not Found</body></html>")
    with pytest.raises(WeightsError, match="not an HDF5 file") as info:
        load_dextr_weights(model, path)
    assert str(path) in str(info.value)


def test_hdf5_without_keras_layout(model, tmp_path):
    from dextr_core.weights import WeightsError, load_dextr_weights

    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(WeightsError, match="not a Keras weights file"):
        load_dextr_weights(model, path)


def test_missing_file(model, tmp_path):
    from dextr_core.weights import WeightsError, load_dextr_weights

    path = tmp_path / "nowhere" / "dextr_pascal-sbd.h5"
    with pytest.raises(WeightsError, match="not found") as info:
        load_dextr_weights(model, path)
    message = str(info.value)
    assert str(path) in message and "python -m dextr_core.download pascal-sbd" in message


def test_save_dextr_weights_round_trip(model, tmp_path, published_file):
    """The writer used by other tests produces the published layout the loader reads back."""
    from dextr_core.weights import load_dextr_weights, read_weight_file, save_dextr_weights

    source, expected = published_file
    load_dextr_weights(model, source)
    path = tmp_path / "saved.h5"
    save_dextr_weights(model, path)
    with h5py.File(path) as f:
        assert f["bn_conv1"].attrs["weight_names"][3] == b"bn_conv1/moving_variance:0"
        assert b"input_1" in list(f.attrs["layer_names"])
    again = read_weight_file(path)
    for name, arrays in expected.items():
        for got, want in zip(again[name], arrays, strict=True):
            np.testing.assert_array_equal(got, want)


def test_the_vendored_manifest_is_the_shared_one():
    """tests/data/weights-manifest.json is a copy of ../shared/dextr/weights-manifest.json."""
    import json

    from conftest import MANIFEST, SHARED

    shared = SHARED / "dextr" / "weights-manifest.json"
    if not shared.is_file():
        pytest.skip("nothing to compare with: ../shared/dextr is not present")
    assert json.loads(MANIFEST.read_text()) == json.loads(shared.read_text())


def test_the_manifest_lists_the_layers_the_downloader_checks(spec_manifest):
    from dextr_core.weights import expected_layer_names

    assert sorted(name for name, _, _ in spec_manifest) == sorted(expected_layer_names())
