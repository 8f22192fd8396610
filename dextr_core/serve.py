"""DEXTR as a service on Ray Serve: ``python -m dextr_core.serve --weights FILE --port P``.

One deployment, :class:`DextrService`, holds the network (loaded once per replica) and answers the
protocol of :mod:`dextr_core.remote` (``GET <prefix>/info``, ``POST <prefix>/predict``). Requests
that arrive together are run as one batch (``@serve.batch``: up to ``max_batch_size`` inputs,
8 by default on GPU replicas and 1 on CPU ones, waiting at most ``batch_wait_ms`` for the batch
to fill). The number of replicas is fixed
(``--replicas N``) or autoscaled between ``--replicas`` and ``--max-replicas`` by Ray Serve on the
number of requests in flight per replica. Ray runs the replicas on a cluster: a new local one by
default, or an existing one with ``--address auto`` / ``ray://head:10001`` (GPU workers: give each
replica ``--num-gpus 1``). See docs/scale-out.md.

The same application from a Ray Serve config file (``serve run`` / ``serve deploy``)::

    applications:
      - name: dextr
        route_prefix: /dextr
        import_path: dextr_core.serve:build_app
        args: {weights: /models/dextr_pascal-sbd.h5, replicas: 2, max_replicas: 4, num_gpus: 1}

Ray is optional for the project: this module imports without it (the protocol helpers and
:func:`predict_body` work, for tests and for other servers), and :func:`main` says how to install
it when it is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import DextrError
from .processing import point_heatmap
from .remote import PROTOCOL, decode_request, encode_probability

try:  # optional dependency: pip install 'ray[serve]' (requirements-dev.txt, extra "serve")
    from ray import serve
except ImportError:  # pragma: no cover - exercised where ray is not installed
    serve = None

#: The application's name in Ray Serve and its default URL prefix.
APP_NAME = "dextr"
DEFAULT_PREFIX = "/dextr"
INSTALL_COMMAND = "pip install 'ray[serve]==2.60.0'"

#: A batched network: float32 ``(B, 512, 512, 4)`` -> float32 ``(B, 512, 512)`` in [0, 1].
BatchForward = Callable[[np.ndarray], np.ndarray]


class ServeSetupError(DextrError):
    """The service cannot start (Ray missing, a bad option); the message says what to do."""


def network_input(crop: np.ndarray, grid_points: np.ndarray) -> np.ndarray:
    """Network input float32 ``(512, 512, 4)`` from a decoded request: the uint8 crop and the
    point heatmap of the grid points (as :func:`dextr_core.processing.make_input` builds it)."""
    x = np.empty((*crop.shape[:2], 4), dtype=np.float32)
    x[:, :, :3] = crop
    x[:, :, 3] = point_heatmap(grid_points, size=crop.shape[0])
    return x


def predict_body(body: bytes, forward: BatchForward) -> bytes:
    """A whole ``/predict`` exchange without Ray: request body -> ``.npy`` answer body.

    ``forward`` is run on a batch of one. Raises ``ValueError`` for a request the service cannot
    use (see :func:`dextr_core.remote.decode_request`).
    """
    x = network_input(*decode_request(body))
    return encode_probability(np.asarray(forward(x[None]), dtype=np.float32)[0])


class _Engine:
    """The network of one replica: ``name``, ``runtime`` and a batched ``forward``.

    Built from a DEXTR weights file with :class:`dextr_core.segmenters.DextrSegmenter` (same
    runtime choice, fidelity check and warm-up as the app). OpenVINO is compiled for a batch of
    one, so a batch runs as consecutive forwards there (on CPU that costs nothing); the other
    runtimes take the whole batch in one call (what a GPU wants).
    """

    def __init__(self, weights: str, runtime: str = "auto"):
        from .segmenters import DextrSegmenter, make_forward

        self.segmenter = DextrSegmenter(weights, runtime=runtime, warm_up=True)
        self.name, self.runtime = self.segmenter.name, self.segmenter.runtime
        self._batched = None
        if self.runtime != "openvino":
            self._batched, _ = make_forward(self.segmenter.model, self.runtime)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        if self._batched is None:
            return np.stack([self.segmenter.predict_network(x) for x in batch])
        return np.asarray(self._batched(np.ascontiguousarray(batch)), dtype=np.float32)[..., 0]


def _batch(**options):
    """``serve.batch(**options)`` where Ray is installed, else leave the method as it is."""
    if serve is None:
        return lambda method: method
    return serve.batch(**options)


class DextrService:
    """The Ray Serve deployment (wrapped by :func:`build_app`): one network per replica.

    ``weights``: a DEXTR HDF5 file readable on every worker; ``runtime``: as
    :class:`dextr_core.segmenters.DextrSegmenter`. ``forward``/``name``: a batched forward
    (:data:`BatchForward`) to serve instead of the weights (tests, other engines).
    ``max_batch_size``/``batch_wait_ms``: dynamic batching, see the module docstring.
    """

    def __init__(
        self,
        weights: str | None = None,
        runtime: str = "auto",
        *,
        forward: BatchForward | None = None,
        name: str | None = None,
        max_batch_size: int = 8,
        batch_wait_ms: float = 10.0,
    ):
        if forward is None:
            if weights is None:
                raise ServeSetupError("DextrService needs a weights file (or a forward)")
            engine = _Engine(weights, runtime)
            self._forward, self.name, self.runtime = engine.forward, engine.name, engine.runtime
        else:
            self._forward, self.name, self.runtime = forward, name or "DEXTR (custom)", "custom"
        if serve is not None:
            self._infer.set_max_batch_size(int(max_batch_size))
            self._infer.set_batch_wait_timeout_s(float(batch_wait_ms) / 1000.0)
        self.max_batch_size = int(max_batch_size)

    def info(self) -> dict:
        """What ``GET /info`` answers."""
        return {
            "service": "dextr",
            "protocol": PROTOCOL,
            "name": self.name,
            "runtime": f"{self.runtime}, Ray Serve batches of up to {self.max_batch_size}",
            "pid": os.getpid(),
        }

    @_batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _infer(self, inputs: list[np.ndarray]) -> list[tuple[np.ndarray, int]]:
        """Run the requests that arrived together as one batch (a worker thread keeps the
        replica's event loop free); each gets its map and the batch size."""
        probs = await asyncio.to_thread(self._forward, np.stack(inputs))
        return [(np.asarray(p, dtype=np.float32), len(inputs)) for p in probs]

    async def __call__(self, request):
        from starlette.responses import JSONResponse, Response

        path = request.url.path.rstrip("/")
        if request.method == "GET" and (
            path.endswith("/info") or path == request.scope.get("root_path", "").rstrip("/")
        ):
            return JSONResponse(self.info())
        if request.method != "POST" or not path.endswith("/predict"):
            return JSONResponse(
                {"error": "use GET <prefix>/info or POST <prefix>/predict"}, status_code=404
            )
        try:
            x = network_input(*decode_request(await request.body()))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        prob, batch_size = await self._infer(x)
        return Response(
            encode_probability(prob),
            media_type="application/x-npy",
            headers={"X-Dextr-Batch-Size": str(batch_size), "X-Dextr-Pid": str(os.getpid())},
        )


def deployment_options(
    replicas: int = 1,
    max_replicas: int | None = None,
    *,
    max_batch_size: int = 8,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
) -> dict:
    """Ray Serve ``.options(...)`` for :class:`DextrService`: a fixed number of replicas, or
    autoscaling from ``replicas`` to ``max_replicas`` aiming at ``max_batch_size`` requests in
    flight per replica. Raises :class:`ServeSetupError` for counts that make no sense."""
    if replicas < 1:
        raise ServeSetupError(f"--replicas must be at least 1, got {replicas}")
    if max_replicas is not None and max_replicas < replicas:
        raise ServeSetupError(
            f"--max-replicas ({max_replicas}) must not be below --replicas ({replicas})"
        )
    if max_batch_size < 1:
        raise ServeSetupError(f"--max-batch-size must be at least 1, got {max_batch_size}")
    options: dict = {
        "max_ongoing_requests": 2 * max_batch_size,
        "ray_actor_options": {"num_cpus": num_cpus, "num_gpus": num_gpus},
    }
    if max_replicas is not None and max_replicas > replicas:
        options["autoscaling_config"] = {
            "min_replicas": replicas,
            "initial_replicas": replicas,
            "max_replicas": max_replicas,
            "target_ongoing_requests": max_batch_size,
        }
    else:
        options["num_replicas"] = replicas
    return options


def default_batch_size(num_gpus: float, asked: int | None = None) -> int:
    """``asked`` if given, else 8 for replicas with a GPU and 1 on CPU.

    On a CPU a batch runs as consecutive forwards (OpenVINO is compiled for one input) and every
    request in it is answered when the last one is done: batches of 8 made each click wait for
    eight forwards (docs/benchmarks-dextr.md, "Model service"). A GPU runs 8 inputs in about the
    time of one, so there batching is what raises throughput.
    """
    if asked is not None:
        return int(asked)
    return 8 if num_gpus > 0 else 1


def _require_serve():
    if serve is None:
        raise ServeSetupError(
            f"Ray Serve is not installed, so the model service cannot start. Install it with "
            f"`{INSTALL_COMMAND}` (the app itself runs without it)."
        )
    return serve


def build_app(args: dict):
    """The Ray Serve application (``import_path: dextr_core.serve:build_app`` in a config file).

    ``args`` keys: ``weights`` (required unless ``forward``), ``runtime``, ``replicas``,
    ``max_replicas``, ``max_batch_size`` (default: :func:`default_batch_size`),
    ``batch_wait_ms``, ``num_cpus``, ``num_gpus``, and for programs ``forward`` + ``name`` (see :class:`DextrService`).
    """
    serve_api = _require_serve()
    args = dict(args)
    weights = args.pop("weights", None)
    if weights is not None:
        weights = str(Path(weights).expanduser().resolve())
        if not Path(weights).is_file():
            raise ServeSetupError(
                f"Weights file not found: {weights}. Give the path of a DEXTR .h5 file that "
                "every Ray worker can read (python -m dextr_core.download pascal-sbd fetches one)."
            )
    num_gpus = float(args.pop("num_gpus", 0.0))
    max_batch_size = default_batch_size(num_gpus, args.pop("max_batch_size", None))
    options = deployment_options(
        int(args.pop("replicas", 1)),
        None if args.get("max_replicas") is None else int(args.pop("max_replicas")),
        max_batch_size=max_batch_size,
        num_cpus=float(args.pop("num_cpus", 1.0)),
        num_gpus=num_gpus,
    )
    args.pop("max_replicas", None)
    unknown = set(args) - {"runtime", "batch_wait_ms", "forward", "name"}
    if unknown:
        raise ServeSetupError(f"Unknown option(s) for the DEXTR service: {sorted(unknown)}")
    deployment = serve_api.deployment(DextrService, name="DextrService").options(**options)
    return deployment.bind(
        weights,
        args.get("runtime", "auto"),
        forward=args.get("forward"),
        name=args.get("name"),
        max_batch_size=max_batch_size,
        batch_wait_ms=float(args.get("batch_wait_ms", 10.0)),
    )


def start(
    args: dict,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    route_prefix: str = DEFAULT_PREFIX,
) -> str:
    """Deploy :func:`build_app` ``(args)`` on the Ray cluster this process is connected to
    (``ray.init`` first) and return its URL ``http://host:port/prefix`` once every replica is up.
    Serve's HTTP proxy listens on ``host:port`` (``0.0.0.0`` for other machines)."""
    serve_api = _require_serve()
    serve_api.start(http_options={"host": host, "port": int(port)})
    serve_api.run(build_app(args), name=APP_NAME, route_prefix=route_prefix, blocking=False)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{int(port)}{route_prefix}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dextr_core.serve",
        description="Serve DEXTR on Ray Serve for RemoteSegmenter / optional.model_server.",
    )
    p.add_argument("--weights", required=True, help="DEXTR .h5 weights file (readable by workers)")
    p.add_argument("--replicas", type=int, default=1, help="replicas (autoscaling minimum)")
    p.add_argument("--max-replicas", type=int, default=None, help="autoscale up to this many")
    p.add_argument("--port", type=int, default=8000, help="HTTP port of Serve's proxy")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    p.add_argument("--route-prefix", default=DEFAULT_PREFIX, help="URL path of the service")
    p.add_argument("--runtime", default="auto", help="network runtime, as DEXTR_RUNTIME")
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=None,
        help="requests run as one batch (default: 8 with --num-gpus, else 1)",
    )
    p.add_argument("--batch-wait-ms", type=float, default=10.0, help="longest wait for a batch")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs reserved per replica")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per replica (e.g. 1)")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (auto, ray://head:10001); default: start a local one",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line: deploy, print the URL, serve until Ctrl-C / SIGTERM, then shut down."""
    args = _parser().parse_args(argv)
    try:
        _require_serve()
        if not Path(args.weights).expanduser().is_file():  # before Ray's slow start
            raise ServeSetupError(
                f"Weights file not found: {args.weights}. Give the path of a DEXTR .h5 file "
                "(python -m dextr_core.download pascal-sbd fetches one)."
            )
        import ray

        if args.address is None:  # a local cluster: its workers import dextr_core from here
            root = str(Path(__file__).resolve().parents[1])
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
            ray.init(
                address="local",
                include_dashboard=False,
                runtime_env={"env_vars": {"PYTHONPATH": path}},
            )
        else:
            ray.init(address=args.address)
        url = start(
            {
                "weights": args.weights,
                "runtime": args.runtime,
                "replicas": args.replicas,
                "max_replicas": args.max_replicas,
                "max_batch_size": args.max_batch_size,
                "batch_wait_ms": args.batch_wait_ms,
                "num_cpus": args.num_cpus,
                "num_gpus": args.num_gpus,
            },
            host=args.host,
            port=args.port,
            route_prefix=args.route_prefix,
        )
    except DextrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"DEXTR model service ready at {url}  (optional.model_server: {url})", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
