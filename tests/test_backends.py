"""The same weights file and input give the same DEXTR output on the JAX and PyTorch Keras backends
as on TensorFlow. Each backend runs in its own subprocess with KERAS_BACKEND set (Keras picks its
backend once per process); a backend that is not installed is skipped.

Tolerance: the three backends run the same float32 graph with different convolution kernels
(oneDNN, XLA:CPU, ATen), so results differ by float32 rounding accumulated over 100+ layers. We
compare the logits (the network's pre-sigmoid output, recovered from the probabilities where they
are not saturated) relative to their spread, and the probabilities absolutely with 1e-4; a wrong
layer, resize or padding shifts them by orders of magnitude more (test_network pins those parts).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # builds the 49 M-parameter network once per backend

REPO = Path(__file__).resolve().parents[1]

# Writes a seeded weights file (published layout) and the TensorFlow reference output
# (test_segmenters checks that the file loads back into the same TensorFlow output).
MAKE_REFERENCE = r"""
import sys, numpy as np, keras
from dextr_core.processing import make_input
from dextr_core.segmenters import make_forward
from dextr_core.weights import save_dextr_weights, seeded_dextr
folder = sys.argv[1]
model = seeded_dextr(99)
save_dextr_weights(model, folder + "/weights.h5")
rng = np.random.default_rng(5)
image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
image[80:220, 100:300] = (30, 200, 60)
x, box = make_input(image, [[100, 150], [299, 140], [200, 80], [210, 219]])
np.save(folder + "/x.npy", x)
forward, runtime = make_forward(model, "graph")  # Keras itself on TensorFlow
np.save(folder + "/y_tensorflow.npy", forward(x[None])[0, :, :, 0])
print(keras.backend.backend(), runtime)
"""

# Loads the file with DextrSegmenter on the backend of KERAS_BACKEND and saves its output.
RUN_BACKEND = r"""
import sys, numpy as np, keras
from dextr_core.segmenters import DextrSegmenter
folder, name = sys.argv[1], sys.argv[2]
runtime = "graph" if keras.backend.backend() == "tensorflow" else "auto"
segmenter = DextrSegmenter(folder + "/weights.h5", runtime=runtime, warm_up=False)
np.save(f"{folder}/y_{name}.npy", segmenter.predict_network(np.load(folder + "/x.npy")))
print(keras.backend.backend(), segmenter.runtime)
"""


def run_python(code: str, *args: str, backend: str = "tensorflow") -> str:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("backends")
    assert run_python(MAKE_REFERENCE, str(folder)).startswith("tensorflow")
    yield folder
    (folder / "weights.h5").unlink()  # ~196 MB; pytest keeps the last runs' tmp folders


def logits(prob: np.ndarray) -> np.ndarray:
    p = np.clip(prob.astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


@pytest.mark.parametrize("backend,module", [("jax", "jax"), ("torch", "torch")])
def test_backend_matches_tensorflow(reference, backend, module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install {module})")
    assert run_python(RUN_BACKEND, str(reference), backend, backend=backend).startswith(backend)
    want = np.load(reference / "y_tensorflow.npy")
    got = np.load(reference / f"y_{backend}.npy")
    assert got.shape == want.shape == (512, 512)
    assert 0.05 < want.mean() < 0.95 and want.std() > 0.01  # not a saturated, constant map
    diff = np.abs(got - want)
    stats = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean())}
    unsaturated = (want > 1e-4) & (want < 1 - 1e-4)
    spread = logits(want[unsaturated]).std()
    stats["max_logit_diff_over_spread"] = float(
        np.abs(logits(got[unsaturated]) - logits(want[unsaturated])).max() / spread
    )
    print(backend, json.dumps(stats))
    assert stats["max_abs"] < 1e-4, stats
    assert stats["max_logit_diff_over_spread"] < 1e-3, stats
