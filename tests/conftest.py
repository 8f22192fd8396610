"""Shared test fixtures: where the repo, its samples and the shared evaluation data are, a private
engine cache for the run, and a DEXTR network with seeded weights in the published layout."""

import os
from pathlib import Path

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
    """``(model, path)``: a DEXTR network with seeded weights (``dextr_core.weights.seeded_dextr``)
    and those weights written to ``seeded_dextr.h5`` in the published layout."""
    from dextr_core.weights import save_dextr_weights, seeded_dextr

    model = seeded_dextr(1234)
    path = tmp_path_factory.mktemp("weights") / "seeded_dextr.h5"
    save_dextr_weights(model, path)
    yield model, path
    path.unlink()  # ~196 MB; pytest keeps the last runs' tmp folders
