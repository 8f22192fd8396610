"""Shared test fixtures: where the repo, its samples and the shared evaluation data are."""

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
EVALDATA = SHARED / "evaldata"
SAMPLES = REPO / "samples" / "images"


@pytest.fixture(scope="session")
def evaldata_dir() -> Path:
    """``../shared/evaldata`` read in place; tests using it skip where it is absent."""
    if not (EVALDATA / "grabcut").is_dir():
        pytest.skip("../shared/evaldata is not present")
    return EVALDATA


@pytest.fixture(scope="session")
def spec_manifest() -> list:
    """The 219 weighted layers of the published DEXTR files: [name, [weight names], [shapes]]."""
    import json

    path = SHARED / "dextr" / "weights-manifest.json"
    if not path.is_file():
        pytest.skip("../shared/dextr/weights-manifest.json is not present")
    return json.loads(path.read_text())


@pytest.fixture(scope="session", autouse=True)
def private_engine_cache(tmp_path_factory) -> Path:
    """The OpenVINO export cache (dextr_core.ir_cache) in a fresh folder for this test run, so
    tests start cold and never touch the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("dextr-cache")
    os.environ["DEXTR_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def seeded_dextr(tmp_path_factory):
    """``(model, path)``: a DEXTR network with seeded weights and non-trivial batch-norm
    statistics, and those weights written to ``seeded_dextr.h5`` in the published layout."""
    import keras

    from dextr_core.network import build_dextr
    from dextr_core.weights import save_dextr_weights

    keras.utils.set_random_seed(1234)
    model = build_dextr()
    rng = np.random.default_rng(1)  # non-trivial statistics, so that loading them matters
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.0, gamma.shape).astype(np.float32),
                    rng.normal(0.0, 0.1, beta.shape).astype(np.float32),
                    rng.normal(0.0, 0.1, mean.shape).astype(np.float32),
                    rng.uniform(1.0, 2.0, var.shape).astype(np.float32),
                ]
            )
    path = tmp_path_factory.mktemp("weights") / "seeded_dextr.h5"
    save_dextr_weights(model, path)
    yield model, path
    path.unlink()  # ~196 MB; pytest keeps the last runs' tmp folders
