"""Throughput of the DEXTR model service (dextr_core.serve on Ray Serve) seen by its clients.

For each replica count a local Ray instance serves the network (seeded random weights in the
published layout unless --weights is given: same cost per forward as the published ones), and
1, 4 and 8 client threads each segment objects through :class:`dextr_core.remote.RemoteSegmenter`
(a 640 x 480 photo, a different object per request, the whole client path: crop, PNG, HTTP,
batching, network, paste). Printed: objects per second and the latency each client saw.

    python bench/bench_serve.py                                # replicas 1 2, clients 1 4 8
    python bench/bench_serve.py --replicas 1 --clients 1 4 --requests 8 --runtime graph

Prints a Markdown table with the date and the machine. Nothing is written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dextr_core.runtime import cpu_name  # noqa: E402


def objects(n: int, rng: np.random.Generator):
    """``n`` (image, points) pairs: one 640 x 480 photo-like image, objects of varied size."""
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    out = []
    for _ in range(n):
        w, h = rng.integers(60, 400), rng.integers(60, 300)
        x0, y0 = rng.integers(0, 640 - w), rng.integers(0, 480 - h)
        cx, cy = x0 + w // 2, y0 + h // 2
        out.append((image, [[x0, cy], [x0 + w - 1, cy], [cx, y0], [cx, y0 + h - 1]]))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cell(url: str, clients: int, work: list) -> dict:
    """``clients`` threads share ``work``; returns throughput and latencies (s)."""
    from dextr_core.remote import RemoteSegmenter

    segmenter = RemoteSegmenter(url, timeout=600, retries=0)
    latencies: list[float] = []

    def one(item):
        image, points = item
        start = time.perf_counter()
        mask = segmenter.segment(image, points)
        latencies.append(time.perf_counter() - start)
        return int(mask.sum())

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, work))
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "objects": len(work),
        "wall": wall,
        "rate": len(work) / wall,
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None, help="DEXTR .h5 (default: seeded weights)")
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--requests", type=int, default=8, help="objects per cell (all clients)")
    p.add_argument("--runtime", default="auto")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--batch-wait-ms", type=float, default=10.0)
    p.add_argument("--num-cpus", type=float, default=1.0, help="Ray CPUs per replica")
    args = p.parse_args(argv)

    import ray
    from ray import serve as ray_serve

    from dextr_core import serve
    from dextr_core.remote import RemoteSegmenter

    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as folder:
        weights = args.weights
        if weights is None:
            from dextr_core.weights import save_dextr_weights, seeded_dextr

            weights = str(Path(folder) / "seeded_dextr.h5")
            save_dextr_weights(seeded_dextr(0), weights)
        ray.init(
            address="local",
            num_cpus=max(args.replicas) * args.num_cpus + 1,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
        )
        rows = []
        rng = np.random.default_rng(0)
        port = free_port()
        try:
            for replicas in args.replicas:
                t0 = time.perf_counter()
                url = serve.start(
                    {
                        "weights": weights,
                        "runtime": args.runtime,
                        "replicas": replicas,
                        "max_batch_size": args.max_batch_size,
                        "batch_wait_ms": args.batch_wait_ms,
                        "num_cpus": args.num_cpus,
                    },
                    port=port,  # Serve keeps its first proxy port for the whole instance
                )
                ready = time.perf_counter() - t0
                if not rows:  # the header, once the engine is known; rows follow as measured
                    info = RemoteSegmenter(url, timeout=600).info
                    print(
                        f"Model service throughput, {started:%Y-%m-%d %H:%M} UTC, {cpu_name()}, "
                        f"{os.cpu_count()} cores (shared), load average at start "
                        f"{os.getloadavg()[0]:.1f}, Python {platform.python_version()}, "
                        f"Ray {ray.__version__}; engine {info.get('name')} "
                        f"({info.get('runtime')}); {args.requests} objects per row (at least "
                        "one per client), 640 x 480 image, clients and service on this machine."
                    )
                    print()
                    print(
                        "| replicas | clients | objects/s | latency p50 (s) | latency p95 (s) "
                        "| wall (s) | replicas ready after (s) | load average |"
                    )
                    print("|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
                for clients in args.clients:
                    work = objects(max(args.requests, clients), rng)
                    r = run_cell(url, clients, work)
                    rows.append(r)
                    print(
                        f"| {replicas} | {clients} | {r['rate']:.2f} | {r['p50']:.2f} | "
                        f"{r['p95']:.2f} | {r['wall']:.1f} | {ready:.0f} | "
                        f"{os.getloadavg()[0]:.1f} |",
                        flush=True,
                    )
                ray_serve.delete(serve.APP_NAME)
        finally:
            ray_serve.shutdown()
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
