"""The DEXTR graph: layer names, parameter count, shapes through the net, strides/dilations, the
odd PSP pooling and the align_corners=True bilinear resize."""

from __future__ import annotations

import numpy as np
import pytest

from dextr_core.network import AlignCornersResize, align_corners_matrix


def test_align_corners_matrix_by_hand():
    # 2 -> 3: the ends coincide, the middle sample is halfway
    np.testing.assert_allclose(align_corners_matrix(2, 3), [[1, 0], [0.5, 0.5], [0, 1]])
    # 3 -> 5: positions 0, 0.5, 1, 1.5, 2
    np.testing.assert_allclose(
        align_corners_matrix(3, 5),
        [[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 0, 1]],
    )
    np.testing.assert_array_equal(align_corners_matrix(1, 4), np.ones((4, 1)))
    m = align_corners_matrix(6, 64)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)


def test_resize_matches_tensorflow_align_corners():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for size_in, size_out in [(1, 64), (2, 64), (3, 64), (6, 64), (64, 512)]:
        x = rng.normal(size=(2, size_in, size_in, 3)).astype(np.float32)
        got = np.asarray(AlignCornersResize(size_out, size_out)(x))
        want = tf.compat.v1.image.resize_bilinear(x, (size_out, size_out), align_corners=True)
        # TF computes the sample positions in float32 (error ~1e-5 at 512), ours in float64
        np.testing.assert_allclose(got, want.numpy(), atol=5e-5)
        # and it is not the half-pixel resize of keras.layers.Resizing
        if size_in > 1:
            half_pixel = tf.image.resize(x, (size_out, size_out), method="bilinear").numpy()
            assert np.abs(got - half_pixel).max() > 1e-2


@pytest.fixture(scope="module")
def model():
    from dextr_core.network import build_dextr

    return build_dextr()


@pytest.mark.slow
def test_parameter_count(model):
    # 49.0 M, batch-norm moving statistics included (the sum of the manifest's shapes)
    assert model.count_params() == 48_910_849


@pytest.mark.slow
def test_weighted_layers_are_the_published_ones(model, spec_manifest):
    from dextr_core.weights import expected_layer_names

    built = [layer.name for layer in model.layers if layer.weights]
    assert sorted(built) == sorted(expected_layer_names())
    shapes = {layer.name: [tuple(w.shape) for w in layer.weights] for layer in model.layers}
    for name, _, manifest_shapes in spec_manifest:
        assert shapes[name] == [tuple(s) for s in manifest_shapes], name


@pytest.mark.slow
def test_shapes_strides_and_dilations(model):
    assert tuple(model.input.shape) == (None, 512, 512, 4)
    assert tuple(model.output.shape) == (None, 512, 512, 1)
    feature_size = {"conv1": 256, "pool1": 128, "res2c": 128, "res3a": 64, "res4w": 64}
    for name, size in feature_size.items():
        assert tuple(model.get_layer(name).output.shape[1:3]) == (size, size), name
    assert tuple(model.get_layer("res5c_relu").output.shape) == (None, 64, 64, 2048)
    # Caffe layout: the stride sits on the first 1x1 conv and on the shortcut
    assert model.get_layer("res3a_branch2a").strides == (2, 2)
    assert model.get_layer("res3a_branch1").strides == (2, 2)
    assert model.get_layer("res3a_branch2b").strides == (1, 1)
    for block in "abcdefghijklmnopqrstuvw":
        assert model.get_layer(f"res4{block}_branch2b").dilation_rate == (2, 2)
    for block in "abc":
        assert model.get_layer(f"res5{block}_branch2b").dilation_rate == (4, 4)
    assert model.get_layer("res3b_branch2b").dilation_rate == (1, 1)
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert [c.name for c in convs if c.use_bias] == ["class_psp_final_conv"]
    bns = [layer for layer in model.layers if layer.__class__.__name__ == "BatchNormalization"]
    assert all(bn.epsilon == 1e-5 for bn in bns)


@pytest.mark.slow
def test_psp_pyramid(model):
    for level in (1, 2, 3, 6):
        pooled = model.get_layer(f"class_psp_{level}_pool").output
        assert tuple(pooled.shape) == (None, level, level, 2048)
        assert tuple(model.get_layer(f"class_psp_{level}_resize").output.shape) == (
            None,
            64,
            64,
            512,
        )
    assert model.get_layer("class_psp_concat").output.shape[-1] == 4096


@pytest.mark.slow
def test_forward_gives_probabilities(model):
    x = np.random.default_rng(0).uniform(0, 255, (1, 512, 512, 4)).astype(np.float32)
    y = np.asarray(model(x, training=False))
    assert y.shape == (1, 512, 512, 1) and y.dtype == np.float32
    assert np.isfinite(y).all() and y.min() >= 0.0 and y.max() <= 1.0
