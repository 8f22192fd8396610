"""Loading the published DEXTR weight files (Keras 2 ``save_weights`` HDF5) into the network.

Layout (see ``../shared/dextr/SPEC.md``): the root attribute ``layer_names`` lists every layer,
weightless ones included; each layer has a group whose attribute ``weight_names`` gives the paths
of its datasets inside the group, in the order the layer expects them (kernel[, bias] for a conv;
gamma, beta, moving_mean, moving_variance for a batch norm). Layers are matched BY NAME (the file
order is not the build order) and weights are taken in ``weight_names`` order, whatever their text
says (files saved from a reused TF graph carry names such as ``conv1_1/kernel:0``).

This module needs only h5py and numpy; the Keras model is passed in.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from .errors import DextrError

#: The command that fetches the default published weights into models/.
DOWNLOAD_COMMAND = "python -m dextr_core.download pascal-sbd"
#: Where the app looks for weights by default (relative to the repository root).
DEFAULT_WEIGHTS_NAME = "dextr_pascal-sbd.h5"

REMEDY = (
    f"Download it again with `{DOWNLOAD_COMMAND}`, or put the published {DEFAULT_WEIGHTS_NAME} "
    "from the DEXTR project page in models/ (see models/README.md)."
)


#: Blocks per ResNet-101 stage and the PSP pyramid levels, as named in the published files
#: (``dextr_core.network`` builds the same graph; tests/test_network.py pins that they agree).
RESNET101_BLOCKS = {2: 3, 3: 4, 4: 23, 5: 3}
PSP_LEVELS = (1, 2, 3, 6)


def expected_layer_names() -> list[str]:
    """The 219 weighted layer names of a published DEXTR file, in build order, without Keras."""
    names = ["conv1", "bn_conv1"]
    for stage, blocks in RESNET101_BLOCKS.items():
        for i in range(blocks):
            block = chr(ord("a") + i)
            for branch in ("2a", "2b", "2c") + (("1",) if i == 0 else ()):
                names += [f"res{stage}{block}_branch{branch}", f"bn{stage}{block}_branch{branch}"]
    for level in PSP_LEVELS:
        names += [f"class_psp_{level}_conv", f"class_psp_{level}_bn"]
    return names + ["class_psp_reduce_conv", "class_psp_reduce_bn", "class_psp_final_conv"]


class WeightsError(DextrError):
    """A weights file that is missing, unreadable or does not fit the DEXTR network.

    The message names the file, the first layer that does not fit (expected vs found) and what
    to do.
    """


def _decode(values) -> list[str]:
    """HDF5 string attributes come back as bytes, str or numpy arrays of either."""
    return [v.decode("utf-8") if isinstance(v, bytes | np.bytes_) else str(v) for v in values]


def read_weight_file(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Read every layer's weights from a Keras 2 HDF5 weights file.

    Returns ``{layer name: [arrays in weight_names order]}`` for the layers listed in the root
    ``layer_names`` attribute (weightless layers map to ``[]``). Full-model files whose weights sit
    under ``model_weights`` are accepted too. Raises :class:`WeightsError` when the file is
    missing, not HDF5, truncated or lacks the layout.
    """
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "not found"
        raise WeightsError(f"Weights file {what}: {p}. {REMEDY}")
    if not h5py.is_hdf5(p):
        raise WeightsError(
            f"Weights file {p} is not an HDF5 file (wrong file, or an HTML error page saved "
            f"instead of the weights). {REMEDY}"
        )
    try:
        with h5py.File(p, "r") as f:
            root = (
                f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
            )
            if "layer_names" not in root.attrs:
                raise WeightsError(
                    f"Weights file {p} is HDF5 but not a Keras weights file (no 'layer_names' "
                    f"attribute). {REMEDY}"
                )
            weights: dict[str, list[np.ndarray]] = {}
            for name in _decode(root.attrs["layer_names"]):
                if name not in root:
                    weights[name] = []
                    continue
                group = root[name]
                names = _decode(group.attrs.get("weight_names", []))
                weights[name] = [np.asarray(group[w], dtype=np.float32) for w in names]
            return weights
    except WeightsError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise WeightsError(
            f"Weights file {p} cannot be read ({exc}); it is probably truncated or damaged "
            f"(an interrupted download?). {REMEDY}"
        ) from exc


def save_dextr_weights(model, path: str | os.PathLike) -> None:
    """Write the model's weights in the published Keras 2 HDF5 layout (readable by
    :func:`load_dextr_weights` and by Keras 2 ``load_weights``).

    Layers in build order, weightless ones included in ``layer_names``; weight names
    ``<layer>/<variable>:0``. Written to ``<path>.part`` and renamed, so ``path`` is never partial.
    """
    p = Path(path)
    part = p.with_name(p.name + ".part")
    with h5py.File(part, "w") as f:
        f.attrs["layer_names"] = np.array(
            [layer.name.encode() for layer in model.layers], dtype="S"
        )
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.5"
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{w.name}:0" for w in layer.weights]
            group.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for name, value in zip(names, layer.get_weights(), strict=True):
                group.create_dataset(name, data=np.asarray(value, dtype=np.float32))
    os.replace(part, p)


def check_weights_fit(model, weights: dict[str, list[np.ndarray]], path: str | os.PathLike) -> None:
    """Raise :class:`WeightsError` naming the first model layer whose weights are absent from
    ``weights`` or have another count or shape than the model expects; return None if all fit."""
    for layer in model.layers:
        expected = [tuple(int(d) for d in w.shape) for w in layer.weights]
        if not expected:
            continue
        found_arrays = weights.get(layer.name)
        if found_arrays is None:
            raise WeightsError(
                f"Weights file {path} has no layer '{layer.name}' (expected weights of shapes "
                f"{expected}); it is not a DEXTR weights file. {REMEDY}"
            )
        found = [tuple(a.shape) for a in found_arrays]
        if len(found) != len(expected):
            raise WeightsError(
                f"Weights file {path}: layer '{layer.name}' has {len(found)} weights {found}, "
                f"expected {len(expected)} {expected}; it is not a DEXTR weights file. {REMEDY}"
            )
        for index, (want, got) in enumerate(zip(expected, found, strict=True)):
            if want != got:
                raise WeightsError(
                    f"Weights file {path}: layer '{layer.name}' weight {index} has shape {got}, "
                    f"expected {want}; it is not the DEXTR network's file. {REMEDY}"
                )


def apply_weights(model, weights: dict[str, list[np.ndarray]], path: str | os.PathLike) -> None:
    """Set ``weights`` (from :func:`read_weight_file`) on the model's layers, matched by name.

    Everything is checked first (:func:`check_weights_fit`), so a file that does not fit leaves
    the model as it was; layers present only in the file are ignored.
    """
    check_weights_fit(model, weights, path)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(weights[layer.name])


def load_dextr_weights(model, path: str | os.PathLike) -> None:
    """Load a published DEXTR HDF5 weights file into ``model`` (from :func:`build_dextr`).

    Every weighted layer of the model must be present in the file with the same number and shapes
    of weights; everything is checked before any weight is set, so a bad file leaves the model as
    it was. Layers present only in the file are ignored. Raises :class:`WeightsError` (missing
    file, not HDF5, truncated, a layer missing, a wrong shape) with the file name, the first layer
    that does not fit and what to do.
    """
    apply_weights(model, read_weight_file(path), path)


def seeded_dextr(seed: int = 0):
    """A DEXTR network (``keras.Model``) with seeded random weights, for tests and benchmarks.

    Convolutions get Keras's initialisers under ``keras.utils.set_random_seed(seed)``; every
    batch norm gets non-trivial values from ``numpy.random.default_rng(seed)`` (scale 0.5-1.5,
    shift and mean N(0, 0.1), variance 1-2), so the output map is neither constant nor saturated
    and loading the statistics matters. Write it with :func:`save_dextr_weights` to get a file in
    the published layout without the published weights.
    """
    import keras

    from .network import build_dextr

    keras.utils.set_random_seed(seed)
    model = build_dextr()
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, n).astype(np.float32),
                    rng.normal(0.0, 0.1, n).astype(np.float32),
                    rng.normal(0.0, 0.1, n).astype(np.float32),
                    rng.uniform(1.0, 2.0, n).astype(np.float32),
                ]
            )
    return model
