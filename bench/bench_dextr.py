"""Benchmark the DEXTR engine on this machine and print Markdown tables.

Forward latency of the network (median of ``--repeat`` runs after one warm-up call) for each
runtime that is installed, each in its own process (Keras picks its backend once per process):

    tf-predict   model.predict (TensorFlow backend)
    tf-eager     model(x) called directly
    tf-graph     tf.function around model(x)   (DextrSegmenter's default without OpenVINO)
    tf-xla       tf.function(jit_compile=True)
    jax          KERAS_BACKEND=jax, predict_on_batch (jit-compiled by Keras)
    torch        KERAS_BACKEND=torch, predict_on_batch
    openvino     the Keras model exported with model.export(format="openvino"), reshaped to a
                 static batch of one and run by the OpenVINO CPU plugin in float32
                 (INFERENCE_PRECISION_HINT=f32); DextrSegmenter's default on TensorFlow when
                 openvino is installed

"max |diff|" is the largest absolute difference of the 512 x 512 probability map from tf-graph's,
same weights and input (against jax where TensorFlow is missing, as on the lent GPU machine).
"device" is what the runtime computed on: JAX, PyTorch and TensorFlow use a GPU when one is
visible, so the same command measures the GPU latency there. Weights: models/dextr_pascal-sbd.h5
if present (or --weights), else a seeded random file in the published layout (speed does not
depend on the values).

Pre- plus post-processing (make_input + paste_mask) for a 640 x 480 and a 4000 x 3000 image,
with a typical object (box about a quarter of the image) and a full-frame one.

    python bench/bench_dextr.py                       # everything
    python bench/bench_dextr.py --parts processing
    python bench/bench_dextr.py --runtimes tf-graph,tf-xla --repeat 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RUNTIMES = ["tf-predict", "tf-eager", "tf-graph", "tf-xla", "jax", "torch", "openvino"]
BACKEND_OF = {"jax": "jax", "torch": "torch"}  # the others run on TensorFlow
NEEDS = {"jax": ["jax"], "torch": ["torch"], "openvino": ["tensorflow", "openvino"]}  # else TF


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def device(runtime: str) -> str:
    """What the runtime computes on: the accelerator's name, or "CPU"."""
    if runtime == "jax":
        import jax

        dev = jax.devices()[0]
        return "CPU" if dev.platform == "cpu" else dev.device_kind
    if runtime == "torch":
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    if runtime.startswith("tf-"):
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return gpus[0].name if gpus else "CPU"
    return "CPU"


def seeded_weights(path: Path) -> None:
    """A published-layout weights file with seeded values (speed does not depend on them)."""
    from dextr_core.weights import save_dextr_weights, seeded_dextr

    save_dextr_weights(seeded_dextr(99), path)


def sample_input() -> np.ndarray:
    from dextr_core.processing import make_input

    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    image[120:360, 160:480] = (30, 200, 60)
    x, _ = make_input(image, [[160, 240], [479, 230], [320, 120], [330, 359]])
    return x[None]


def worker(runtime: str, weights: Path, folder: Path, repeat: int) -> dict:
    """Run in a subprocess: time one runtime, save its output, return the figures."""
    from dextr_core.network import build_dextr
    from dextr_core.segmenters import make_forward
    from dextr_core.weights import load_dextr_weights

    start = time.perf_counter()
    model = build_dextr()
    load_dextr_weights(model, weights)
    result = {"runtime": runtime, "build_load_s": time.perf_counter() - start}
    result["device"] = device(runtime)
    if runtime == "openvino":
        start = time.perf_counter()
        forward, _ = make_forward(model, "openvino")
        result["export_s"] = time.perf_counter() - start
    elif runtime in ("jax", "torch"):
        forward, _ = make_forward(model, "predict")
    else:
        forward, _ = make_forward(model, runtime.removeprefix("tf-"))
    x = sample_input()
    start = time.perf_counter()
    y = np.asarray(forward(x))
    result["first_s"] = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        forward(x)
        times.append(time.perf_counter() - start)
    result["median_s"] = statistics.median(times)
    result["min_s"] = min(times)
    np.save(folder / f"y_{runtime}.npy", y.reshape(512, 512))
    return result


def bench_forward(runtimes: list[str], weights: Path | None, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_dextr_") as tmp:
        folder = Path(tmp)
        if weights is None:
            weights = folder / "seeded.h5"
            # any installed backend writes the same file (the GPU machine has no TensorFlow)
            backend = next(b for b in ("tensorflow", "jax", "torch") if installed(b))
            run_worker(["--make-weights", str(weights)], backend)
            source = "seeded random weights"
        else:
            source = str(weights)
        rows = []
        for runtime in runtimes:
            missing = [m for m in NEEDS.get(runtime, ["tensorflow"]) if not installed(m)]
            if missing:
                rows.append({"runtime": runtime, "note": f"needs {', '.join(missing)}"})
                continue
            args = ["--worker", runtime, "--weights", str(weights), "--folder", str(folder)]
            out = run_worker(
                args + ["--repeat", str(repeat)], BACKEND_OF.get(runtime, "tensorflow")
            )
            rows.append(json.loads(out.strip().splitlines()[-1]))
        measured = [r["runtime"] for r in rows if "note" not in r]
        ref = next((r for r in ("tf-graph", "jax", "torch") if r in measured), None)
        for row in rows:
            y = folder / f"y_{row['runtime']}.npy"
            if ref and y.exists():
                reference = np.load(folder / f"y_{ref}.npy")
                row["max_diff"] = float(np.abs(np.load(y) - reference).max())
    print(f"\n### Forward, 1 x 512 x 512 x 4, median of {repeat} after warm-up ({source})\n")
    print(
        "| runtime | device | median s | min s | first call s | build+load s "
        f"| max abs diff vs {ref} |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        if "note" in row:
            print(f"| {row['runtime']} | | {row['note']} | | | | |")
            continue
        first = f"{row['first_s']:.2f}"
        if "export_s" in row:
            first += f" (+ export and compile {row['export_s']:.1f})"
        diff = f"{row['max_diff']:.1e}" if "max_diff" in row else "-"
        print(
            f"| {row['runtime']} | {row['device']} | {row['median_s']:.4f} | {row['min_s']:.4f} "
            f"| {first} | "
            f"{row['build_load_s']:.1f} | {diff} |"
        )


def run_worker(args: list[str], backend: str) -> str:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, timeout=1800
    )
    if result.returncode != 0:
        raise SystemExit(f"worker {args} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def bench_processing(repeat: int) -> None:
    from dextr_core.processing import make_input, paste_mask

    rng = np.random.default_rng(0)
    prob = rng.random((512, 512, 1), dtype=np.float32)
    cases = []
    for width, height in [(640, 480), (4000, 3000)]:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        w, h = width // 2, height // 2  # typical: the box is a quarter of the image
        typical = [[w // 2, h], [w // 2 + w, h + 10], [w, h // 2], [w + 10, h // 2 + h]]
        full = [
            [0, height // 2],
            [width - 1, height // 2],
            [width // 2, 0],
            [width // 2, height - 1],
        ]
        cases += [(f"{width} x {height}", "quarter", image, typical)]
        cases += [(f"{width} x {height}", "full frame", image, full)]
    print(f"\n### Pre- + post-processing, median of {repeat} (ms)\n")
    print("| image | object box | make_input | paste_mask | total |")
    print("|---|---|---|---|---|")
    for size, kind, image, points in cases:
        pre, post = [], []
        for _ in range(repeat + 1):
            start = time.perf_counter()
            _, box = make_input(image, points)
            mid = time.perf_counter()
            paste_mask(prob, box, image.shape)
            end = time.perf_counter()
            pre.append(mid - start)
            post.append(end - mid)
        pre_ms, post_ms = statistics.median(pre[1:]) * 1e3, statistics.median(post[1:]) * 1e3
        print(f"| {size} | {kind} | {pre_ms:.1f} | {post_ms:.1f} | {pre_ms + post_ms:.1f} |")


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), load average {os.getloadavg()[0]:.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="forward,processing", help="forward,processing")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help=",".join(RUNTIMES))
    parser.add_argument("--repeat", type=int, default=5, help="timed runs after the warm-up")
    parser.add_argument("--weights", type=Path, help="weights file (default: models/ or seeded)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--make-weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.make_weights:
        seeded_weights(args.make_weights)
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.weights, args.folder, args.repeat)))
        return

    print(f"# bench_dextr: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}")
    parts = args.parts.split(",")
    if "processing" in parts:
        bench_processing(max(args.repeat, 20))
    if "forward" in parts:
        runtimes = [r for r in args.runtimes.split(",") if r]
        unknown = sorted(set(runtimes) - set(RUNTIMES))
        if unknown:
            parser.error(f"unknown runtimes {unknown}; choose from {RUNTIMES}")
        weights = args.weights
        default = REPO / "models" / "dextr_pascal-sbd.h5"
        if weights is None and default.is_file():
            weights = default
        bench_forward(runtimes, weights, args.repeat)


if __name__ == "__main__":
    main()
