"""DEXTR as a service (dextr_core.serve on Ray Serve) and its client (dextr_core.remote).

Three layers: the wire format and the client's failure handling against a small stdlib HTTP
server that answers with the service's own request code (no Ray, fast); the Ray Serve deployment
on a local Ray instance with a small fake forward (masks equal the in-process ones, batching,
bad requests); and ONE slow test serving the seeded DEXTR network through the command line.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from dextr_core import remote, serve
from dextr_core.processing import make_input, paste_mask, paste_probability
from dextr_core.remote import ModelServiceError, RemoteSegmenter, load_remote_or_fallback
from dextr_core.segmenters import Segmenter

REPO = Path(__file__).resolve().parents[1]
#: Limit for the Ray tests, start and stop included (a cold local Ray + Serve took ~60 s on the
#: shared 2-core machine).
RAY_TESTS_LIMIT_S = 600


def fake_forward(batch: np.ndarray) -> np.ndarray:
    """A cheap stand-in for the network: float32 (B, 512, 512, 4) -> (B, 512, 512) in (0, 1),
    high near the clicks (heatmap channel) and varying with the colours, so masks are neither
    empty nor the whole box and depend on every input channel."""
    heat = batch[..., 3] / 255.0
    colour = (batch[..., 0] - 0.5 * batch[..., 1] - 0.5 * batch[..., 2]) / 255.0
    return (1.0 / (1.0 + np.exp(-(8.0 * heat - 3.0 + 2.0 * colour)))).astype(np.float32)


def fragile_forward(marker: str, batch: np.ndarray) -> np.ndarray:
    """``fake_forward``, except that the replica process dies (as if the GPU worker crashed)
    when the file ``marker`` exists; the file is removed first, so only one replica dies."""
    try:
        os.remove(marker)
    except FileNotFoundError:
        return fake_forward(batch)
    os._exit(1)


def in_process(image, points, threshold=0.8):
    """What an in-process engine with ``fake_forward`` as its network gives: (prob, mask)."""
    x, box = make_input(image, points)
    out = fake_forward(x[None])[0]
    return (
        paste_probability(out, box, np.shape(image)),
        paste_mask(out, box, np.shape(image), threshold),
    )


def _images():
    rng = np.random.default_rng(7)
    colour = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    gray16 = (rng.integers(0, 65536, (240, 320), dtype=np.uint16) // 7).astype(np.uint16)
    rgba = rng.integers(0, 256, (200, 260, 4), dtype=np.uint8)
    large = rng.integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    return {
        # the relaxed box runs past the image on three sides: the zero padding travels too
        "colour, box past the border": (colour, [[2, 150], [398, 160], [200, 1], [210, 297]]),
        "16-bit gray": (gray16, [[40, 120], [280, 110], [150, 30], [160, 210]]),
        "RGBA": (rgba, [[30, 100], [230, 90], [120, 20], [130, 180]]),
        "small object in a large photo (crop upscaled)": (
            large,
            [[700, 600], [760, 610], [730, 570], [735, 640]],
        ),
    }


IMAGES = _images()


# --- a stdlib stand-in for the service, answering with the service's own request code ----------


class Stub:
    """An HTTP server on loopback answering ``/info`` and ``/predict`` like the service
    (``serve.predict_body`` with ``fake_forward``), except for the scripted answers in ``plan``:
    an int is answered as that HTTP status, ``"hang"`` waits until the test ends, ``"cut"``
    breaks the answer off after a few bytes."""

    def __init__(self, info=None):
        self.plan: list = []
        self.requests: list[str] = []
        self.release = threading.Event()
        self.info = info or {"service": "dextr", "protocol": 1, "name": "stub", "runtime": "fake"}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status, body, kind):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _scripted(self) -> bool:
                stub.requests.append(self.path)
                action = stub.plan.pop(0) if stub.plan else "ok"
                if action == "hang":
                    stub.release.wait(30)
                    return True
                if action == "cut":  # the answer breaks off, as when a replica dies mid-reply
                    self.send_response(200)
                    self.send_header("Content-Length", "1000000")
                    self.end_headers()
                    self.wfile.write(b"\x93NUMPY")
                    self.close_connection = True
                    return True
                if isinstance(action, int):
                    error = json.dumps({"error": f"scripted {action}"}).encode()
                    self._answer(action, error, "application/json")
                    return True
                return False

            def do_GET(self):
                if not self._scripted():
                    self._answer(200, json.dumps(stub.info).encode(), "application/json")

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self._scripted():
                    return
                try:
                    answer = serve.predict_body(body, fake_forward)
                except ValueError as exc:
                    self._answer(400, json.dumps({"error": str(exc)}).encode(), "application/json")
                    return
                self._answer(200, answer, "application/x-npy")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dextr"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.close()


def closed_port_url() -> str:
    """An address on loopback where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/dextr"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- wire format --------------------------------------------------------------------------------


def test_the_request_carries_the_network_crop_and_grid_points_exactly():
    image, points = IMAGES["colour, box past the border"]
    crop, grid, box = remote.prepare(image, points)
    x, expected_box = make_input(image, points)
    decoded_crop, decoded_points = remote.decode_request(remote.encode_request(crop, grid))
    assert box == expected_box
    assert decoded_crop.dtype == np.uint8 and decoded_crop.shape == (512, 512, 3)
    assert np.array_equal(decoded_crop, x[:, :, :3].astype(np.uint8))
    # the service rebuilds exactly the in-process network input from what was sent
    assert np.array_equal(serve.network_input(decoded_crop, decoded_points), x)


def test_the_crop_travels_as_an_rgb_png_so_other_tools_read_it_the_right_way_round():
    import base64

    import cv2

    crop = np.zeros((512, 512, 3), dtype=np.uint8)
    crop[..., 0] = 200  # pure red
    doc = json.loads(remote.encode_request(crop, np.array([[1, 1], [9, 9], [5, 1], [5, 9]])))
    bgr = cv2.imdecode(np.frombuffer(base64.b64decode(doc["crop_png"]), np.uint8), 1)
    assert bgr[0, 0].tolist() == [0, 0, 200]  # OpenCV's BGR order: the file holds red


def _body(**change) -> bytes:
    doc = json.loads(
        remote.encode_request(
            np.zeros((512, 512, 3), np.uint8), np.array([[1, 1], [9, 9], [5, 1], [5, 9]])
        )
    )
    doc.update(change)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"\x89PNG not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (_body(protocol=2), "protocol 2"),
        (_body(crop_png="not base64!"), "base64 PNG"),
        (
            remote.encode_request(np.zeros((256, 512, 3), np.uint8), np.array([[1, 1]] * 4)),
            "512 x 512 8-bit RGB PNG, got (256, 512, 3)",
        ),
        (_body(points=[[1, 1], [2, 2], [3, 3]]), "at least four"),
        (_body(points=[[1, 1], [2, 2], [3, 3], [512, 3]]), "0..511 grid"),
        (_body(points="four"), "list of [x, y] integer pairs"),
    ],
    ids=["not json", "not an object", "protocol", "base64", "size", "3 points", "off grid", "text"],
)
def test_a_request_the_service_cannot_use_is_refused_saying_what_is_wrong(body, says):
    with pytest.raises(ValueError) as info:
        serve.predict_body(body, fake_forward)
    assert says in str(info.value)


# --- the client against a stand-in server -------------------------------------------------------


def test_the_remote_segmenter_is_a_segmenter_named_after_the_served_engine(stub):
    segmenter = RemoteSegmenter(stub.url)
    assert isinstance(segmenter, Segmenter)
    assert segmenter.is_fallback is False
    assert segmenter.name == f"stub on {stub.url.split('/')[2]}"
    assert stub.url in segmenter.runtime_info and "fake" in segmenter.runtime_info


@pytest.mark.parametrize("case", list(IMAGES))
def test_masks_over_the_wire_equal_the_in_process_ones(stub, case):
    image, points = IMAGES[case]
    segmenter = RemoteSegmenter(stub.url, check=False)
    prob, mask = in_process(image, points)
    got_mask = segmenter.segment(image, points)
    assert got_mask.dtype == bool and got_mask.shape == image.shape[:2]
    assert 0 < mask.sum() < mask.size  # a real test: neither empty nor everything
    assert np.array_equal(got_mask, mask)
    assert np.array_equal(segmenter.predict(image, points), prob)


def test_a_service_that_is_down_raises_an_error_saying_how_to_start_it_and_that_the_fallback_is_offered():
    pauses: list[float] = []
    url = closed_port_url()
    with pytest.raises(ModelServiceError) as info:
        RemoteSegmenter(url, retries=2, backoff=0.5, sleep=pauses.append)
    message = str(info.value)
    assert url in message and "connection refused" in message and "3 tries" in message
    assert "python -m dextr_core.serve" in message and "optional.model_server" in message
    assert "local engine" in message
    assert pauses == [0.5, 1.0]  # two retries, backing off


def test_a_service_that_goes_down_after_the_start_fails_the_click_with_the_same_error(stub):
    image, points = IMAGES["RGBA"]
    segmenter = RemoteSegmenter(stub.url, retries=1, sleep=lambda s: None)
    stub.close()
    with pytest.raises(ModelServiceError, match="is not answering"):
        segmenter.segment(image, points)


def test_no_replica_ready_is_retried_and_the_retry_gives_the_mask(stub):
    image, points = IMAGES["16-bit gray"]
    pauses: list[float] = []
    segmenter = RemoteSegmenter(stub.url, check=False, retries=2, sleep=pauses.append)
    stub.plan = [503, 500]
    assert np.array_equal(segmenter.segment(image, points), in_process(image, points)[1])
    assert stub.requests == ["/dextr/predict"] * 3 and len(pauses) == 2


def test_an_answer_cut_off_midway_is_retried(stub):
    image, points = IMAGES["RGBA"]
    segmenter = RemoteSegmenter(stub.url, check=False, retries=1, sleep=lambda s: 0)
    stub.plan = ["cut"]
    assert np.array_equal(segmenter.segment(image, points), in_process(image, points)[1])
    assert len(stub.requests) == 2


def test_an_answer_slower_than_the_timeout_is_retried_then_reported(stub):
    image, points = IMAGES["RGBA"]
    segmenter = RemoteSegmenter(stub.url, check=False, timeout=0.3, retries=1, sleep=lambda s: 0)
    stub.plan = ["hang", "hang"]
    with pytest.raises(ModelServiceError, match=r"no answer in time; 2 tries"):
        segmenter.segment(image, points)
    assert len(stub.requests) == 2


def test_a_refused_request_is_not_retried_and_its_reason_is_shown(stub):
    image, points = IMAGES["RGBA"]
    segmenter = RemoteSegmenter(stub.url, check=False, retries=3, sleep=lambda s: 0)
    stub.plan = [400]
    with pytest.raises(ModelServiceError, match="refused the request: HTTP 400 scripted 400"):
        segmenter.segment(image, points)
    assert len(stub.requests) == 1


def test_bad_points_raise_the_in_process_value_error_before_anything_is_sent(stub):
    image, _ = IMAGES["RGBA"]
    segmenter = RemoteSegmenter(stub.url, check=False)
    with pytest.raises(ValueError, match="at least four extreme points"):
        segmenter.segment(image, [[1, 1], [5, 5], [9, 9]])
    with pytest.raises(ValueError, match="outside the 260 x 200 image"):
        segmenter.segment(image, [[1, 1], [5, 5], [9, 9], [900, 9]])
    assert stub.requests == []


def test_an_address_that_is_not_a_dextr_service_is_refused():
    other = Stub(info={"service": "something else"})
    try:
        with pytest.raises(ModelServiceError, match="not a DEXTR service"):
            RemoteSegmenter(other.url)
    finally:
        other.close()
    with pytest.raises(ModelServiceError, match="'gpu1:8000/dextr' is not an http:// or https"):
        RemoteSegmenter("gpu1:8000/dextr")


def test_load_remote_or_fallback_uses_the_service_when_it_answers(stub):
    made = []
    choice = load_remote_or_fallback(stub.url, lambda: made.append(1))
    assert isinstance(choice.segmenter, RemoteSegmenter) and choice.error is None
    assert made == []  # the local engine is not even built


def test_load_remote_or_fallback_gives_the_local_engine_and_the_message_when_the_service_is_down():
    class Local:
        name, is_fallback = "GrabCut fallback", True

    choice = load_remote_or_fallback(closed_port_url(), Local, retries=0)
    assert isinstance(choice.segmenter, Local)
    assert isinstance(choice.error, ModelServiceError)
    assert "not answering" in str(choice.error) and "local engine" in str(choice.error)


# --- deployment options and the command line, without starting Ray -----------------------------


def test_a_fixed_replica_count_or_an_autoscaling_range_becomes_the_deployment_options():
    fixed = serve.deployment_options(2, None, max_batch_size=4, num_gpus=1)
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1}
    assert fixed["max_ongoing_requests"] == 8  # room for a full batch while one runs
    scaled = serve.deployment_options(1, 4, max_batch_size=8)
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"] == {
        "min_replicas": 1,
        "initial_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 8,
    }


def test_gpu_replicas_batch_by_default_and_cpu_replicas_do_not():
    # on a CPU a batch is consecutive forwards answered together: every click would wait for all
    assert serve.default_batch_size(num_gpus=1) == 8
    assert serve.default_batch_size(num_gpus=0.5) == 8
    assert serve.default_batch_size(num_gpus=0) == 1
    assert serve.default_batch_size(num_gpus=0, asked=4) == 4


@pytest.mark.parametrize(
    ("replicas", "max_replicas", "batch", "says"),
    [
        (0, None, 8, "--replicas must be at least 1"),
        (3, 2, 8, "must not be below"),
        (1, None, 0, "--max-batch-size"),
    ],
)
def test_replica_counts_that_make_no_sense_are_refused(replicas, max_replicas, batch, says):
    with pytest.raises(serve.ServeSetupError, match=says):
        serve.deployment_options(replicas, max_replicas, max_batch_size=batch)


def test_the_command_line_without_ray_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(serve, "serve", None)
    assert serve.main(["--weights", str(tmp_path / "w.h5")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'ray[serve]" in err and "the app itself runs without it" in err


def test_the_command_line_names_a_missing_weights_file_before_starting_ray(
    monkeypatch, capsys, tmp_path
):
    ray = pytest.importorskip("ray", reason="ray[serve] is not installed (requirements-dev.txt)")
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray was started"))
    assert serve.main(["--weights", str(tmp_path / "missing.h5")]) == 2
    assert "Weights file not found" in capsys.readouterr().err


def test_a_missing_weights_file_is_named_before_any_replica_starts(tmp_path):
    pytest.importorskip("ray.serve", reason="ray[serve] is not installed (requirements-dev.txt)")
    with pytest.raises(serve.ServeSetupError, match=r"Weights file not found: .*nothing\.h5"):
        serve.build_app({"weights": str(tmp_path / "nothing.h5")})


# --- the Ray Serve deployment on a local Ray instance (fake forward) ----------------------------


def _start_ray():
    """A new local Ray instance on loopback. In the main thread: Ray ties its processes' lives
    to the thread that starts them (a helper thread ending would kill them). Bounded in time by
    the class's ``pytest.mark.timeout``."""
    import ray

    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )


@pytest.fixture(scope="class")
def ray_service(tmp_path_factory):
    """Two applications on one local Ray instance (loopback): ``/dextr`` (batches of up to 8,
    10 ms wait) and ``/batch`` (batches of exactly 4: it waits up to 60 s for the 4th request).
    Both serve ``fake_forward``; ``/fragile`` serves ``fragile_forward``. Yields their URLs and the
    fragile one's marker file; Serve and Ray are stopped afterwards."""
    pytest.importorskip("ray.serve", reason="ray[serve] is not installed (requirements-dev.txt)")
    import ray
    from ray import cloudpickle
    from ray import serve as ray_serve

    # the replicas cannot import this test module: send fake_forward itself, not its name
    cloudpickle.register_pickle_by_value(sys.modules[fake_forward.__module__])
    _start_ray()
    try:
        port = free_port()
        common = {"forward": fake_forward, "name": "fake-engine", "num_cpus": 0.5}
        url = serve.start({**common, "max_batch_size": 8, "batch_wait_ms": 10}, port=port)
        app = serve.build_app({**common, "max_batch_size": 4, "batch_wait_ms": 60_000})
        ray_serve.run(app, name="dextr-batch", route_prefix="/batch")
        marker = tmp_path_factory.mktemp("fragile") / "die-once"
        fragile = {**common, "forward": functools.partial(fragile_forward, str(marker))}
        ray_serve.run(serve.build_app(fragile), name="dextr-fragile", route_prefix="/fragile")
        yield {
            "url": url,
            "batch_url": f"http://127.0.0.1:{port}/batch",
            "fragile_url": f"http://127.0.0.1:{port}/fragile",
            "marker": marker,
        }
    finally:
        ray_serve.shutdown()
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[fake_forward.__module__])


@pytest.mark.timeout(RAY_TESTS_LIMIT_S)
@pytest.mark.usefixtures("ray_service")
class TestOnRayServe:
    def test_the_service_names_its_engine_and_batch_size(self, ray_service):
        segmenter = RemoteSegmenter(ray_service["url"])
        assert segmenter.name.startswith("fake-engine on 127.0.0.1:")
        assert "custom, Ray Serve batches of up to 8" in segmenter.runtime_info

    def test_masks_from_the_service_equal_the_in_process_ones(self, ray_service):
        segmenter = RemoteSegmenter(ray_service["url"])
        for case, (image, points) in IMAGES.items():
            prob, mask = in_process(image, points)
            assert np.array_equal(segmenter.segment(image, points), mask), case
            assert np.array_equal(segmenter.predict(image, points), prob), case

    def test_requests_that_arrive_together_run_as_one_batch_and_each_gets_its_own_map(
        self, ray_service
    ):
        cases = list(IMAGES.values())  # four different objects

        def post(case):
            image, points = case
            crop, grid, _ = remote.prepare(image, points)
            request = urllib.request.Request(
                ray_service["batch_url"] + "/predict", data=remote.encode_request(crop, grid)
            )
            with urllib.request.urlopen(request, timeout=120) as answer:
                return answer.headers["X-Dextr-Batch-Size"], remote.decode_probability(
                    answer.read()
                )

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(post, cases))
        assert [size for size, _ in answers] == ["4"] * 4
        for (image, points), (_, prob) in zip(cases, answers, strict=True):
            x, _ = make_input(image, points)
            assert np.array_equal(prob, fake_forward(x[None])[0])

    def test_a_replica_that_dies_mid_request_is_replaced_and_the_retry_gets_the_mask(
        self, ray_service
    ):
        image, points = IMAGES["colour, box past the border"]
        pauses: list[float] = []

        def pause(seconds):  # Ray needs a few seconds to notice and replace the replica
            pauses.append(seconds)
            time.sleep(2)

        segmenter = RemoteSegmenter(ray_service["fragile_url"], retries=90, sleep=pause)
        ray_service["marker"].write_text("die")
        assert np.array_equal(segmenter.segment(image, points), in_process(image, points)[1])
        assert not ray_service["marker"].exists()  # the replica did die on this request
        assert pauses  # and the client retried

    def test_a_request_the_service_cannot_use_gets_400_with_the_reason(self, ray_service):
        request = urllib.request.Request(
            ray_service["url"] + "/predict", data=_body(points=[[1, 1]])
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=60)
        assert info.value.code == 400
        assert "at least four" in json.loads(info.value.read())["error"]


# --- the seeded DEXTR network through the command line (slow: two full forwards + Ray) ----------


@pytest.mark.slow
def test_the_command_line_serves_the_seeded_network_with_the_in_process_masks(seeded_dextr):
    pytest.importorskip("ray.serve", reason="ray[serve] is not installed (requirements-dev.txt)")
    from dextr_core.segmenters import DextrSegmenter

    _, weights = seeded_dextr
    image, points = IMAGES["colour, box past the border"]
    port = free_port()
    log = open(Path(weights).with_name("serve.log"), "w+")  # noqa: SIM115 - read at the end
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_DEDUP_LOGS": "0"}
    command = [sys.executable, "-m", "dextr_core.serve", "--weights", str(weights)]
    command += ["--port", str(port), "--runtime", "graph", "--num-cpus", "1"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/dextr"
    try:
        deadline = time.monotonic() + 420
        while "ready at" not in Path(log.name).read_text():
            assert process.poll() is None, Path(log.name).read_text()[-3000:]
            assert time.monotonic() < deadline, "the service did not start within 420 s"
            time.sleep(1)
        served = RemoteSegmenter(url, timeout=120).segment(image, points)
        local = DextrSegmenter(weights, runtime="graph", warm_up=False).segment(image, points)
        assert 0 < local.sum() < local.size
        assert np.array_equal(served, local)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
        log.close()
