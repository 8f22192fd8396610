"""The DEXTR network: ResNet-101 (Caffe layout, dilated) with a PSP head, built from keras.layers.

The graph follows ``../shared/dextr/SPEC.md`` exactly, layer names included, so that the published
Keras weight files load by name (see :mod:`dextr_core.weights`). Only ``keras.layers`` and
``keras.ops`` are used, so the model runs on the TensorFlow, JAX and PyTorch Keras backends.

Input: ``(batch, 512, 512, 4)`` float32, channels-last (RGB crop 0..255 + extreme-point heatmap
0..255). Output: ``(batch, 512, 512, 1)`` float32 foreground probability in [0, 1].
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

#: Side of the square network input and output, in pixels.
INPUT_SIZE = 512
#: Batch-norm epsilon of the published network.
BN_EPSILON = 1e-5
#: PSP pyramid: level -> (average-pool size, stride) on the 64 x 64 feature map.
PSP_POOLS = {1: (64, 64), 2: (32, 32), 3: (22, 21), 6: (11, 9)}
#: ResNet-101 stages: stage -> (number of blocks, filters of the 1x1/3x3/1x1 convs, first stride,
#: dilation of the 3x3 convs).
RESNET101_STAGES = {
    2: (3, (64, 64, 256), 1, 1),
    3: (4, (128, 128, 512), 2, 1),
    4: (23, (256, 256, 1024), 1, 2),
    5: (3, (512, 512, 2048), 1, 4),
}


def align_corners_matrix(size_in: int, size_out: int) -> np.ndarray:
    """Linear-interpolation matrix ``(size_out, size_in)`` float32 for an align_corners=True resize.

    Output sample ``i`` sits at input position ``i * (size_in - 1) / (size_out - 1)`` (the first and
    last samples of input and output coincide); each row holds the two linear weights. With
    ``size_in == 1`` every row is ``[1]``. Applying it along both axes gives bilinear resizing.
    """
    matrix = np.zeros((size_out, size_in), dtype=np.float64)
    if size_in == 1 or size_out == 1:
        matrix[:, 0] = 1.0
        return matrix.astype(np.float32)
    position = np.arange(size_out) * (size_in - 1) / (size_out - 1)
    left = np.minimum(np.floor(position).astype(int), size_in - 2)
    frac = position - left
    rows = np.arange(size_out)
    matrix[rows, left] = 1.0 - frac
    matrix[rows, left + 1] += frac
    return matrix.astype(np.float32)


class AlignCornersResize(layers.Layer):
    """Bilinear resize of a channels-last ``(batch, h, w, c)`` tensor with align_corners=True.

    Implemented as two small interpolation matrices (``(out_h, h)`` and ``(out_w, w)``) applied
    with ``keras.ops.matmul``, which every Keras backend supports and which OpenVINO runs without
    the transposes an einsum costs it; ``keras.layers.Resizing`` uses
    half-pixel centres instead and gives visibly different DEXTR outputs.
    """

    def __init__(self, height: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.height = int(height)
        self.width = int(width)

    def build(self, input_shape):
        in_h, in_w = int(input_shape[1]), int(input_shape[2])
        self._in_w, self._channels = in_w, int(input_shape[3])
        self._rows = align_corners_matrix(in_h, self.height)
        self._cols = align_corners_matrix(in_w, self.width)

    def call(self, inputs):
        rows = ops.convert_to_tensor(self._rows, dtype=inputs.dtype)
        cols = ops.convert_to_tensor(self._cols, dtype=inputs.dtype)
        w, c = self._in_w, self._channels
        # two plain matmuls, no transposes: (H, h) @ (b, h, w*c), then (W, w) @ (b, H, w, c)
        out = ops.matmul(rows, ops.reshape(inputs, (-1, self._rows.shape[1], w * c)))
        return ops.matmul(cols, ops.reshape(out, (-1, self.height, w, c)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width}


def _bottleneck(
    x, stage: int, block: str, filters, stride: int, dilation: int, shortcut_conv: bool
):
    """One ResNet v1 (Caffe) bottleneck block; the stride sits on the first 1x1 conv."""
    f2a, f2b, f2c = filters
    conv = f"res{stage}{block}_branch"
    bn = f"bn{stage}{block}_branch"

    y = layers.Conv2D(f2a, 1, strides=stride, use_bias=False, name=conv + "2a")(x)
    y = layers.BatchNormalization(epsilon=BN_EPSILON, name=bn + "2a")(y)
    y = layers.Activation("relu", name=f"res{stage}{block}_branch2a_relu")(y)
    y = layers.Conv2D(
        f2b, 3, padding="same", dilation_rate=dilation, use_bias=False, name=conv + "2b"
    )(y)
    y = layers.BatchNormalization(epsilon=BN_EPSILON, name=bn + "2b")(y)
    y = layers.Activation("relu", name=f"res{stage}{block}_branch2b_relu")(y)
    y = layers.Conv2D(f2c, 1, use_bias=False, name=conv + "2c")(y)
    y = layers.BatchNormalization(epsilon=BN_EPSILON, name=bn + "2c")(y)

    if shortcut_conv:
        shortcut = layers.Conv2D(f2c, 1, strides=stride, use_bias=False, name=conv + "1")(x)
        shortcut = layers.BatchNormalization(epsilon=BN_EPSILON, name=bn + "1")(shortcut)
    else:
        shortcut = x
    y = layers.Add(name=f"res{stage}{block}")(  # same name as Caffe's sum layer
        [y, shortcut]
    )
    return layers.Activation("relu", name=f"res{stage}{block}_relu")(y)


def _block_letters(count: int) -> list[str]:
    """Block names of a stage: a, b, c, ... (stage 4 of ResNet-101 runs a..w)."""
    return [chr(ord("a") + i) for i in range(count)]


def _psp_branch(features, level: int):
    """One pyramid level: average-pool, 1x1 conv 512, BN, ReLU, resize back (align corners)."""
    pool, stride = PSP_POOLS[level]
    size = int(features.shape[1])
    y = layers.AveragePooling2D(
        pool, strides=stride, padding="valid", name=f"class_psp_{level}_pool"
    )(features)
    y = layers.Conv2D(512, 1, use_bias=False, name=f"class_psp_{level}_conv")(y)
    y = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"class_psp_{level}_bn")(y)
    y = layers.Activation("relu", name=f"class_psp_{level}_relu")(y)
    return AlignCornersResize(size, size, name=f"class_psp_{level}_resize")(y)


def build_dextr(input_size: int = INPUT_SIZE) -> keras.Model:
    """Build the DEXTR network (49.0 M parameters, float32, untrained weights).

    Input ``(batch, input_size, input_size, 4)`` float32, output ``(batch, input_size, input_size,
    1)`` sigmoid probability. ``input_size`` other than 512 is only for tests of the graph (the PSP
    pool sizes assume a 64 x 64 feature map, i.e. 512 x 512 input). Load weights with
    :func:`dextr_core.weights.load_dextr_weights`.
    """
    inputs = keras.Input((input_size, input_size, 4), name="input_1", dtype="float32")
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="bn_conv1")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="pool1")(x)

    for stage, (blocks, filters, first_stride, dilation) in RESNET101_STAGES.items():
        for i, block in enumerate(_block_letters(blocks)):
            x = _bottleneck(
                x,
                stage,
                block,
                filters,
                stride=first_stride if i == 0 else 1,
                dilation=dilation,
                shortcut_conv=i == 0,
            )

    pyramid = [_psp_branch(x, level) for level in PSP_POOLS]
    y = layers.Concatenate(axis=-1, name="class_psp_concat")([*pyramid, x])
    y = layers.Conv2D(512, 1, use_bias=False, name="class_psp_reduce_conv")(y)
    y = layers.BatchNormalization(epsilon=BN_EPSILON, name="class_psp_reduce_bn")(y)
    y = layers.Activation("relu", name="class_psp_reduce_relu")(y)
    y = layers.Conv2D(1, 1, use_bias=True, name="class_psp_final_conv")(y)
    y = AlignCornersResize(input_size, input_size, name="class_psp_upsample")(y)
    outputs = layers.Activation("sigmoid", name="class_psp_sigmoid")(y)
    return keras.Model(inputs, outputs, name="dextr_resnet101_psp")
