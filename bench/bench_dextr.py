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

Precision (``--parts precision``): for each runtime, ms per forward in float32, bfloat16 and
float16 (OpenVINO: INFERENCE_PRECISION_HINT; jax/torch/tf-graph: the Keras mixed-precision copy,
dextr_core.precision.reduced_model) interleaved in one process, and each reduced precision's
figures against float32 on the check inputs (min mask IoU, max |dp|, what precision="auto"
would keep), plus what DextrSegmenter(precision="auto") decides on this machine.

Concurrent clients (``--parts clients``): 1, 4 and 8 threads each calling
DextrSegmenter.predict_network with their own inputs at once, ``--rounds`` calls each; p50/p95
latency per call and masks per second, for the serialised segmenter (max_batch=1, one forward at
a time) against dynamic batching (max_batch=8) and, on OpenVINO, two throughput streams.

    python bench/bench_dextr.py                       # processing + forward
    python bench/bench_dextr.py --parts processing
    python bench/bench_dextr.py --runtimes tf-graph,tf-xla --repeat 10
    python bench/bench_dextr.py --parts precision,clients --runtimes openvino
    # the lent GPU machine (JAX and PyTorch, no TensorFlow):
    python bench/bench_dextr.py --parts forward,precision,clients --runtimes jax,torch
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
        weights, source = weights_file(weights, folder)
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
    # no export cache: every run measures start-up and the precision decision afresh
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "DEXTR_CACHE_DIR": "",
    }
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


PRECISION_RUNTIMES = {"openvino", "tf-graph", "jax", "torch"}


def precision_forward(runtime: str, model, precision: str, xml):
    """The forward of ``runtime`` in ``precision`` for the precision table."""
    from dextr_core import precision as prec
    from dextr_core.segmenters import _compile_openvino, make_forward

    if runtime == "openvino":
        return _compile_openvino(xml, precision)
    base = "predict" if runtime in ("jax", "torch") else runtime.removeprefix("tf-")
    net = model if precision == "f32" else prec.reduced_model(model, precision)
    return make_forward(net, base)[0]


def precision_worker(runtime: str, weights: Path, folder: Path, repeat: int) -> dict:
    """Subprocess: ms per forward per precision (interleaved), check figures, auto's choice."""
    from dextr_core import precision as prec
    from dextr_core.network import build_dextr
    from dextr_core.segmenters import DEFAULT_THRESHOLD, DextrSegmenter, _export_openvino
    from dextr_core.weights import load_dextr_weights

    model = build_dextr()
    load_dextr_weights(model, weights)
    xml = _export_openvino(model, folder) if runtime == "openvino" else None
    forwards, unavailable = {}, {}
    for p in ("f32", "bf16", "f16"):
        try:
            forwards[p] = precision_forward(runtime, model, p, xml)
        except Exception as exc:  # e.g. OpenVINO on a CPU without the type
            unavailable[p] = str(exc).splitlines()[0][:120]
    x = sample_input()
    times: dict[str, list[float]] = {p: [] for p in forwards}
    for f in forwards.values():
        np.asarray(f(x))  # warm-up / compile
    for _ in range(repeat):  # interleaved: the machine's load hits every precision alike
        for p, f in forwards.items():
            start = time.perf_counter()
            np.asarray(f(x))
            times[p].append(time.perf_counter() - start)
    rows = []
    inputs = prec.check_inputs()
    for p, f in forwards.items():
        row = {"precision": p, "median_ms": statistics.median(times[p]) * 1e3}
        row["min_ms"] = min(times[p]) * 1e3
        if p != "f32":
            check = prec.measure(
                forwards["f32"], f, inputs, precision=p, threshold=DEFAULT_THRESHOLD
            )
            row.update(min_iou=check.min_iou, max_diff=check.max_difference)
            row["accurate"] = check.accurate
        rows.append(row)
    rows += [{"precision": p, "unavailable": why} for p, why in unavailable.items()]
    del forwards
    backend_runtime = "predict" if runtime in ("jax", "torch") else runtime.removeprefix("tf-")
    auto = DextrSegmenter(weights, runtime=backend_runtime, warm_up=False)
    return {
        "runtime": runtime,
        "device": device(runtime),
        "rows": rows,
        "auto": auto.runtime_info,
    }


def bench_precision(runtimes: list[str], weights: Path | None, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_dextr_") as tmp:
        folder = Path(tmp)
        weights, source = weights_file(weights, folder)
        print(f"\n### Precision: ms per forward (interleaved, median of {repeat}), {source}\n")
        print(
            "| runtime | device | precision | median ms | min ms | min IoU vs f32 "
            "| max abs dp vs f32 | within 0.995 / 0.02 |"
        )
        print("|---|---|---|---|---|---|---|---|")
        autos = []
        for runtime in runtimes:
            if runtime not in PRECISION_RUNTIMES:
                continue
            missing = [m for m in NEEDS.get(runtime, ["tensorflow"]) if not installed(m)]
            if missing:
                print(f"| {runtime} | | needs {', '.join(missing)} | | | | | |")
                continue
            args = ["--precision-worker", runtime, "--weights", str(weights)]
            out = run_worker(
                args + ["--folder", str(folder), "--repeat", str(repeat)],
                BACKEND_OF.get(runtime, "tensorflow"),
            )
            result = json.loads(out.strip().splitlines()[-1])
            for row in result["rows"]:
                if "unavailable" in row:
                    print(
                        f"| {runtime} | {result['device']} | {row['precision']} "
                        f"| not run: {row['unavailable']} | | | | |"
                    )
                    continue
                iou = f"{row['min_iou']:.4f}" if "min_iou" in row else "-"
                diff = f"{row['max_diff']:.4f}" if "max_diff" in row else "-"
                ok = ("yes" if row["accurate"] else "no") if "accurate" in row else "-"
                print(
                    f"| {runtime} | {result['device']} | {row['precision']} "
                    f"| {row['median_ms']:.1f} | {row['min_ms']:.1f} | {iou} | {diff} | {ok} |"
                )
            autos.append((runtime, result["auto"]))
        print()
        for runtime, info in autos:
            print(f'- {runtime}: DextrSegmenter(precision="auto") runs {info}')


def weights_file(weights: Path | None, folder: Path) -> tuple[Path, str]:
    """The weights to benchmark: the given file, else a seeded file written into ``folder``."""
    if weights is not None:
        return weights, str(weights)
    path = folder / "seeded.h5"
    # any installed backend writes the same file (the GPU machine has no TensorFlow)
    backend = next(b for b in ("tensorflow", "jax", "torch") if installed(b))
    run_worker(["--make-weights", str(path)], backend)
    return path, "seeded random weights"


def openvino_streams_forward(xml: Path, streams: int):
    """A thread-safe OpenVINO forward with ``streams`` throughput streams: a pool of infer
    requests, each caller runs its own (OpenVINO's CPU plugin runs them in parallel)."""
    import queue

    import openvino as ov

    core = ov.Core()
    network = core.read_model(str(xml))
    network.reshape([1, 512, 512, 4])
    compiled = core.compile_model(
        network,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "THROUGHPUT",
            "NUM_STREAMS": str(streams),
        },
    )
    pool: queue.Queue = queue.Queue()
    for _ in range(streams):
        pool.put(compiled.create_infer_request())

    def forward(x):
        request = pool.get()
        try:
            return np.asarray(request.infer({0: x[None]})[0])[0, :, :, 0].copy()
        finally:
            pool.put(request)

    return forward


def clients_worker(
    runtime: str, weights: Path, folder: Path, rounds: int, mode: str, client_counts: list[int]
) -> dict:
    """Subprocess: ``client_counts`` concurrent clients on one segmenter in ``mode``."""
    import threading

    from dextr_core import precision as prec
    from dextr_core.segmenters import DextrSegmenter, _export_openvino

    backend_runtime = "predict" if runtime in ("jax", "torch") else runtime.removeprefix("tf-")
    max_batch = 8 if mode == "batched" else 1
    segmenter = DextrSegmenter(
        weights, runtime=backend_runtime, precision="f32", max_batch=max_batch, warm_up=False
    )
    call = segmenter.predict_network
    if mode == "streams":
        call = openvino_streams_forward(_export_openvino(segmenter.model, folder), 2)
    inputs = prec.check_inputs()
    call(inputs[0])  # warm-up
    if segmenter._batcher is not None and runtime in ("jax", "torch"):
        for size in segmenter._batcher.sizes:  # JAX compiles once per padded batch size
            segmenter._batcher._forward(np.zeros((size, 512, 512, 4), dtype=np.float32))
    result = {"runtime": runtime, "mode": mode, "device": device(runtime), "rows": []}
    for clients in client_counts:
        latencies: list[float] = []
        lock = threading.Lock()
        barrier = threading.Barrier(clients)

        def client(i, n_rounds, record, barrier=barrier, latencies=latencies, lock=lock):
            barrier.wait()
            for r in range(n_rounds):
                x = inputs[(i + r * 8) % len(inputs)]
                start = time.perf_counter()
                call(x)
                if record:
                    with lock:
                        latencies.append(time.perf_counter() - start)

        def run(n_rounds, record, clients=clients):
            threads = [
                threading.Thread(target=client, args=(i, n_rounds, record)) for i in range(clients)
            ]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return time.perf_counter() - start

        wall = run(rounds, True)
        latencies.sort()
        p95 = latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))]
        result["rows"].append(
            {
                "clients": clients,
                "p50_s": statistics.median(latencies),
                "p95_s": p95,
                "masks_per_s": len(latencies) / wall,
                "calls": len(latencies),
            }
        )
    if segmenter._batcher is not None:
        sizes = segmenter._batcher.batch_sizes
        result["mean_batch"] = sum(sizes) / len(sizes)
    return result


def bench_clients(
    runtimes: list[str], weights: Path | None, rounds: int, client_counts: str
) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_dextr_") as tmp:
        folder = Path(tmp)
        weights, source = weights_file(weights, folder)
        print(f"\n### Concurrent clients, {rounds} calls each, float32 ({source})\n")
        print("| runtime | device | mode | clients | p50 s | p95 s | masks/s |")
        print("|---|---|---|---|---|---|---|")
        for runtime in runtimes:
            if runtime not in PRECISION_RUNTIMES:
                continue
            missing = [m for m in NEEDS.get(runtime, ["tensorflow"]) if not installed(m)]
            if missing:
                print(f"| {runtime} | | needs {', '.join(missing)} | | | | |")
                continue
            modes = ["serialised", "batched"] + (["streams"] if runtime == "openvino" else [])
            for mode in modes:
                args = ["--clients-worker", runtime, "--mode", mode, "--weights", str(weights)]
                args += ["--clients", client_counts]
                out = run_worker(
                    args + ["--folder", str(folder), "--rounds", str(rounds)],
                    BACKEND_OF.get(runtime, "tensorflow"),
                )
                result = json.loads(out.strip().splitlines()[-1])
                label = mode
                if "mean_batch" in result:
                    label += f" (mean batch {result['mean_batch']:.1f})"
                for row in result["rows"]:
                    print(
                        f"| {runtime} | {result['device']} | {label} | {row['clients']} "
                        f"| {row['p50_s']:.3f} | {row['p95_s']:.3f} | {row['masks_per_s']:.2f} |"
                    )


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
    parser.add_argument(
        "--parts", default="forward,processing", help="forward,processing,precision,clients"
    )
    parser.add_argument("--rounds", type=int, default=2, help="calls per client (clients)")
    parser.add_argument("--clients", default="1,4,8", help="concurrent clients (clients)")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help=",".join(RUNTIMES))
    parser.add_argument("--repeat", type=int, default=5, help="timed runs after the warm-up")
    parser.add_argument("--weights", type=Path, help="weights file (default: models/ or seeded)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--make-weights", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--precision-worker", help=argparse.SUPPRESS)
    parser.add_argument("--clients-worker", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.make_weights:
        seeded_weights(args.make_weights)
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.weights, args.folder, args.repeat)))
        return
    if args.precision_worker:
        result = precision_worker(args.precision_worker, args.weights, args.folder, args.repeat)
        print(json.dumps(result))
        return
    if args.clients_worker:
        counts = [int(n) for n in args.clients.split(",")]
        result = clients_worker(
            args.clients_worker, args.weights, args.folder, args.rounds, args.mode, counts
        )
        print(json.dumps(result))
        return

    print(f"# bench_dextr: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}")
    parts = args.parts.split(",")
    if "processing" in parts:
        bench_processing(max(args.repeat, 20))
    runtimes = [r for r in args.runtimes.split(",") if r]
    unknown = sorted(set(runtimes) - set(RUNTIMES))
    if unknown:
        parser.error(f"unknown runtimes {unknown}; choose from {RUNTIMES}")
    weights = args.weights
    default = REPO / "models" / "dextr_pascal-sbd.h5"
    if weights is None and default.is_file():
        weights = default
    if "forward" in parts:
        bench_forward(runtimes, weights, args.repeat)
    if "precision" in parts:
        bench_precision(runtimes, weights, args.repeat)
    if "clients" in parts:
        bench_clients(runtimes, weights, args.rounds, args.clients)


if __name__ == "__main__":
    main()
