"""DEXTR run by a model service (``python -m dextr_core.serve``): :class:`RemoteSegmenter`.

The network only needs the relaxed crop around the clicks, so that is all that travels. For each
object the client does DEXTR's pre-processing up to the network input with the project's own code
(:func:`dextr_core.processing.make_input`: relaxed box, zero-padded crop, bicubic resize to
512 x 512) and sends

* the 512 x 512 RGB crop as a PNG (lossless, so the service sees exactly the pixels the in-process
  engine would; JPEG would change the masks), and
* the extreme points on that crop's 512 grid (integers, :func:`dextr_core.processing.points_in_crop`).

The service builds the point heatmap from the points (the same
:func:`dextr_core.processing.point_heatmap`), runs the network and answers with its 512 x 512
probability map; the client resizes it to the box and pastes it into the image
(:func:`dextr_core.processing.paste_mask`), as :class:`dextr_core.segmenters.DextrSegmenter` does.
So a request is at most about 1 MB (0.35-0.7 MB for the sample photos) and an answer 1 MB
whatever the photo's size, and the masks equal the in-process ones for the same weights (tests/test_serve.py).

Wire protocol (version :data:`PROTOCOL`), under the service's URL ``http://host:port/<prefix>``:

* ``GET  <url>/info`` -> JSON ``{"service": "dextr", "protocol": 1, "name": ..., "runtime": ...}``
* ``POST <url>/predict`` with JSON ``{"protocol": 1, "crop_png": <base64 PNG, 512 x 512 RGB>,
  "points": [[x, y], ...]}`` -> ``200`` with a ``.npy`` body: float32 ``(512, 512)`` in [0, 1];
  ``400`` with a JSON ``{"error": ...}`` for a request the service cannot use.

Failures: connection errors, timeouts and HTTP 500/502/503/504 (Ray Serve's answers while
replicas start, are overloaded or die) are retried ``retries`` times with a growing pause; after that
:class:`ModelServiceError` says the service is not answering, how to start it and that the local
engine is offered instead. :func:`load_remote_or_fallback` is what the app calls at start.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import DextrError
from .images import to_rgb_uint8
from .processing import (
    DEFAULT_THRESHOLD,
    NET_SIZE,
    make_input,
    paste_mask,
    paste_probability,
    points_in_crop,
    validate_points,
)

#: Version of the wire protocol; the service refuses requests of another version.
PROTOCOL = 1
#: HTTP statuses that mean "try again": no replica ready (503), or the replica that had the request
#: failed (500: Ray Serve's answer when a replica dies mid-request). A /predict changes nothing on
#: the service, so a retry can never do anything twice.
RETRY_STATUSES = frozenset({500, 502, 503, 504})
#: Largest answer read (bytes): a /predict answer is 1 MB (float32 512 x 512 plus the .npy header).
MAX_ANSWER_BYTES = 4 * 1024 * 1024
#: Seconds the app's start waits for the service's /info (one try), then takes the local engine.
START_TIMEOUT_S = 5.0
#: How to start the service (shown in error messages).
START_COMMAND = "python -m dextr_core.serve --weights models/dextr_pascal-sbd.h5 --port 8000"


class ModelServiceError(DextrError):
    """The DEXTR model service did not answer or refused a request.

    ``url``: the service address; ``reason``: what went wrong (one line). The message says what
    to do: start the service or fix ``optional.model_server``; the local engine is offered.
    """

    def __init__(self, url: str, reason: str, *, refused: bool = False, text: str | None = None):
        self.url, self.reason, self.refused = url, reason, refused
        if text is None and refused:
            text = (
                f"The DEXTR model service at {url} refused the request: {reason}. Check that the "
                "service and this app run the same version of dextr_core (docs/scale-out.md). "
                "The local engine is offered meanwhile."
            )
        elif text is None:
            text = (
                f"The DEXTR model service at {url} is not answering ({reason}). Start it "
                f"(`{START_COMMAND}`, see docs/scale-out.md) or correct optional.model_server "
                "in the config; until then the app offers the local engine (the fallback)."
            )
        super().__init__(text)


# --- wire format, shared by the client and the service -------------------------------------------


def encode_request(crop_rgb: np.ndarray, grid_points: np.ndarray) -> bytes:
    """JSON body of a ``/predict`` request: ``crop_rgb`` uint8 ``(512, 512, 3)``, ``grid_points``
    int ``(N, 2)`` ``(x, y)`` on the crop's 512 grid. The crop is stored as an RGB PNG."""
    ok, png = cv2.imencode(".png", np.ascontiguousarray(crop_rgb[:, :, ::-1]))  # cv2 writes BGR
    if not ok:
        raise ValueError("could not encode the crop as PNG")
    doc = {
        "protocol": PROTOCOL,
        "crop_png": base64.b64encode(png.tobytes()).decode("ascii"),
        "points": np.asarray(grid_points, dtype=np.int64).tolist(),
    }
    return json.dumps(doc).encode("utf-8")


def decode_request(body: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``(crop uint8 (512, 512, 3) RGB, points int64 (N, 2))`` from a ``/predict`` body.

    Raises ``ValueError`` saying what is wrong (not JSON, another protocol version, a crop that
    is not a 512 x 512 RGB PNG, fewer than four points, points off the grid).
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the request body is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ValueError("the request body must be a JSON object")
    if doc.get("protocol") != PROTOCOL:
        raise ValueError(
            f"protocol {doc.get('protocol')!r} is not this service's protocol {PROTOCOL}"
        )
    try:
        png = np.frombuffer(base64.b64decode(doc["crop_png"], validate=True), dtype=np.uint8)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError("crop_png must be a base64 PNG") from exc
    bgr = cv2.imdecode(png, cv2.IMREAD_UNCHANGED) if png.size else None
    if bgr is None or bgr.dtype != np.uint8 or bgr.shape != (NET_SIZE, NET_SIZE, 3):
        got = "nothing decodable" if bgr is None else f"{bgr.shape} {bgr.dtype}"
        raise ValueError(f"crop_png must be a {NET_SIZE} x {NET_SIZE} 8-bit RGB PNG, got {got}")
    try:
        points = np.array(doc.get("points"), dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise ValueError("points must be a list of [x, y] integer pairs") from exc
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 4:
        raise ValueError(f"points must be at least four [x, y] pairs, got shape {points.shape}")
    if points.min() < 0 or points.max() >= NET_SIZE:
        raise ValueError(f"points must lie on the 0..{NET_SIZE - 1} grid of the crop")
    return np.ascontiguousarray(bgr[:, :, ::-1]), points


def encode_probability(prob: np.ndarray) -> bytes:
    """``.npy`` bytes of a float32 ``(512, 512)`` probability map (a ``/predict`` answer)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(prob, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def decode_probability(body: bytes) -> np.ndarray:
    """float32 ``(512, 512)`` in [0, 1] from a ``/predict`` answer; ``ValueError`` if it is not one
    (another shape or dtype, NaN or infinite values, values outside [0, 1])."""
    try:
        prob = np.load(io.BytesIO(body), allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"the answer is not a .npy array ({exc})") from exc
    if prob.shape != (NET_SIZE, NET_SIZE) or prob.dtype != np.float32:
        raise ValueError(f"expected float32 {(NET_SIZE, NET_SIZE)}, got {prob.dtype} {prob.shape}")
    if not np.isfinite(prob).all():  # NaN compares false: it would read as all background
        bad = int(np.count_nonzero(~np.isfinite(prob)))
        raise ValueError(f"the answer holds {bad} NaN or infinite value(s), not probabilities; "
                         "the service's model or weights are broken")
    if prob.size and (prob.min() < -1e-3 or prob.max() > 1 + 1e-3):
        raise ValueError(f"the answer holds values from {prob.min():g} to {prob.max():g}, not "
                         "probabilities in [0, 1]")
    return prob


def prepare(image, points) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Client half of the pre-processing: ``(crop uint8 (512, 512, 3), grid points int (N, 2),
    relaxed box)``; the network input is ``crop`` plus ``point_heatmap(grid points)``.

    ``image``/``points`` as :func:`dextr_core.processing.make_input` (which this calls: the crop is
    exactly the one the in-process engine feeds the network). Raises ``ValueError`` for bad points.
    """
    rgb = to_rgb_uint8(image)
    x, box = make_input(rgb, points)
    pixel_points = np.floor(validate_points(points, rgb.shape)).astype(np.int64)
    return x[:, :, :3].astype(np.uint8), points_in_crop(pixel_points, box), box


# --- client -------------------------------------------------------------------------------------


class _Deadline:
    """The end of one exchange with the service: when it passes, the connection is shut down, so
    that no read (of the status line, the headers or the body) waits any longer."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds
        self.expired = False
        self._timer: threading.Timer | None = None

    def arm(self, sock: socket.socket) -> None:
        def expire() -> None:
            self.expired = True
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

        self._timer = threading.Timer(max(0.0, self.at - time.monotonic()), expire)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class _DeadlineHandler:
    """Mixin for urllib's HTTP(S) handlers: each connection arms ``deadline`` once connected."""

    def __init__(self, deadline: _Deadline, **kw):
        super().__init__(**kw)
        self.deadline = deadline

    def do_open(self, http_class, req, **kw):
        deadline = self.deadline

        class Armed(http_class):
            def connect(self):
                super().connect()
                deadline.arm(self.sock)

        return super().do_open(Armed, req, **kw)


class _HTTPHandler(_DeadlineHandler, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_DeadlineHandler, urllib.request.HTTPSHandler):
    pass


def _read_capped(answer, limit: int) -> bytes:
    """The whole body of ``answer``, refusing (``ValueError``) one over ``limit`` bytes before
    reading past it; ``IncompleteRead`` when it ends before its Content-Length."""
    length = answer.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ValueError(f"the answer is {int(length):,} bytes, more than the {limit:,} an "
                         "answer of this protocol can be")
    chunks, size = [], 0
    while chunk := answer.read1(65536):
        size += len(chunk)
        if size > limit:
            raise ValueError(f"the answer is more than the {limit:,} bytes an answer of this "
                             "protocol can be")
        chunks.append(chunk)
    data = b"".join(chunks)
    if length is not None and length.isdigit() and len(data) < int(length):
        raise http.client.IncompleteRead(data, int(length) - len(data))  # cut off: retried
    return data


def _describe(exc: BaseException) -> str:
    """One line for a network failure: "connection refused", "timed out after 30 s", ..."""
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused: nothing listens there"
    if isinstance(reason, TimeoutError | socket.timeout):
        return "no answer in time"
    if isinstance(reason, socket.gaierror):
        return f"host name not found ({reason})"
    return str(reason) or type(reason).__name__


class RemoteSegmenter:
    """A :class:`dextr_core.segmenters.Segmenter` whose network runs in the model service.

    ``url``: the service's address, ``http://host:port/<prefix>`` as printed by
    ``python -m dextr_core.serve`` (e.g. ``http://gpu1:8000/dextr``). ``threshold``: mask =
    probability > threshold, applied here. ``timeout``: seconds one try may take in all, the
    whole answer included however slowly it comes (answers over :data:`MAX_ANSWER_BYTES` are
    refused unread); a forward
    on a busy CPU replica can take several seconds; the first after a replica starts more).
    ``retries``: further tries after a connection error, a timeout or HTTP 500/502/503/504, pausing
    ``backoff * 2**k`` seconds before try k+1 (``sleep`` is injectable for tests). ``check``:
    ask the service for its name now (``GET /info``) and raise :class:`ModelServiceError` if it
    does not answer; without it ``name`` is generic until the first answer. Thread-safe.
    """

    is_fallback = False
    is_remote = True

    def __init__(
        self,
        url: str,
        threshold: float = DEFAULT_THRESHOLD,
        *,
        timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 1.0,
        check: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not str(url).startswith(("http://", "https://")):
            raise ModelServiceError(
                str(url),
                "not an http:// address",
                refused=True,
                text=(
                    f"The model service address {str(url)!r} is not an http:// or https:// "
                    "address; set optional.model_server to one such as http://gpu1:8000/dextr "
                    "(python -m dextr_core.serve prints it). The local engine is used meanwhile."
                ),
            )
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {threshold!r}")
        self.url = str(url).rstrip("/")
        self.threshold = float(threshold)
        self.timeout, self.retries, self.backoff, self._sleep = timeout, retries, backoff, sleep
        self.name = f"DEXTR (model service {self.url})"
        self.runtime_info = f"model service {self.url}"
        self.info: dict = {}
        if check:
            self.refresh_info()

    def __repr__(self) -> str:
        return f"RemoteSegmenter({self.url!r}, threshold={self.threshold})"

    def _request(self, path: str, body: bytes | None = None, *, timeout: float | None = None,
                 retries: int | None = None) -> bytes:
        """One call with retries; returns the 200 body or raises :class:`ModelServiceError`.

        Each try ends after ``timeout`` seconds in all (default ``self.timeout``: connecting,
        sending and the whole answer, however slowly it comes) and refuses an answer over
        :data:`MAX_ANSWER_BYTES`.
        """
        timeout = self.timeout if timeout is None else float(timeout)
        retries = self.retries if retries is None else int(retries)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        last = "no try made"
        for attempt in range(retries + 1):
            if attempt:
                self._sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url + path, data=body, headers=headers)
            deadline = _Deadline(timeout)
            opener = urllib.request.build_opener(_HTTPHandler(deadline), _HTTPSHandler(deadline))
            try:
                with opener.open(request, timeout=timeout) as answer:
                    data = _read_capped(answer, MAX_ANSWER_BYTES)
                if deadline.expired:  # the shut-down connection may read as a short answer
                    raise TimeoutError("the deadline passed")
                return data
            except ValueError as exc:
                raise ModelServiceError(self.url, str(exc), refused=True) from exc
            except urllib.error.HTTPError as exc:
                detail = " ".join(exc.read(4096).decode("utf-8", "replace").split())[:300]
                if exc.code not in RETRY_STATUSES:
                    with contextlib.suppress(ValueError, AttributeError):
                        detail = json.loads(detail).get("error", detail)
                    raise ModelServiceError(
                        self.url, f"HTTP {exc.code} {detail}".strip(), refused=True
                    ) from exc
                last = f"HTTP {exc.code} {detail}".strip()
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                # refused, reset, timed out, or cut off mid-answer (a replica dying)
                last = "no answer in time" if deadline.expired else _describe(exc)
            finally:
                deadline.cancel()
        tries = retries + 1
        raise ModelServiceError(self.url, f"{last}; {tries} {'try' if tries == 1 else 'tries'}")

    def refresh_info(self, *, timeout: float | None = None, retries: int | None = None) -> dict:
        """``GET /info``: the service's engine name and runtime (sets ``name``/``runtime_info``);
        ``timeout``/``retries`` as :meth:`_request` (default: the segmenter's)."""
        try:
            info = json.loads(self._request("/info", timeout=timeout, retries=retries))
        except ValueError as exc:
            raise ModelServiceError(self.url, f"/info is not JSON ({exc})", refused=True) from exc
        if not isinstance(info, dict) or info.get("service") != "dextr":
            raise ModelServiceError(self.url, "this address is not a DEXTR service", refused=True)
        if info.get("protocol") != PROTOCOL:
            raise ModelServiceError(
                self.url,
                f"the service speaks protocol {info.get('protocol')!r}, this app {PROTOCOL}",
                refused=True,
            )
        self.info = info
        host = self.url.split("://", 1)[1].split("/", 1)[0]
        self.name = f"{info.get('name', 'DEXTR')} on {host}"
        self.runtime_info = f"model service {self.url} ({info.get('runtime', '?')})"
        return info

    def predict_network(self, crop: np.ndarray, grid_points: np.ndarray) -> np.ndarray:
        """The service's network output float32 ``(512, 512)`` for one prepared object
        (:func:`prepare`). Raises :class:`ModelServiceError`."""
        body = self._request("/predict", encode_request(crop, grid_points))
        try:
            return decode_probability(body)
        except ValueError as exc:
            raise ModelServiceError(self.url, str(exc), refused=True) from exc

    def predict(self, image, points) -> np.ndarray:
        """Foreground probability ``float32 (H, W)`` in [0, 1]; arguments as
        :meth:`dextr_core.segmenters.DextrSegmenter.predict`. ``ValueError`` for bad points
        (before anything is sent), :class:`ModelServiceError` when the service fails."""
        crop, grid, box = prepare(image, points)
        return paste_probability(self.predict_network(crop, grid), box, np.shape(image))

    def segment(self, image, points) -> np.ndarray:
        """Object mask ``bool (H, W)``: probability > ``self.threshold``; as :meth:`predict`."""
        crop, grid, box = prepare(image, points)
        return paste_mask(self.predict_network(crop, grid), box, np.shape(image), self.threshold)


@dataclass(frozen=True)
class EngineChoice:
    """What :func:`load_remote_or_fallback` picked: the ``segmenter`` to use, and ``error`` (a
    :class:`ModelServiceError`) when the service did not answer and the fallback was taken."""

    segmenter: object
    error: ModelServiceError | None = None


def load_remote_or_fallback(
    url: str,
    fallback_factory: Callable[[], object],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    timeout: float = 30.0,
    retries: int = 2,
    sleep: Callable[[float], None] = time.sleep,
    start_timeout: float = START_TIMEOUT_S,
) -> EngineChoice:
    """The model service at ``url`` if it answers ``/info`` within ``start_timeout`` seconds (one
    try: the app's start waits no longer, for anyone), else ``fallback_factory()``. ``timeout``
    and ``retries`` are the segmenter's for each object afterwards.

    ``fallback_factory``: makes the local engine (e.g. ``lambda: load_segmenter(weights)``);
    called only when the service is not reachable. Returns an :class:`EngineChoice`; its
    ``error`` message (say it to the user) says the service is down, how to start it and that the
    local engine runs meanwhile. A service that answers but refuses (another protocol, not a DEXTR
    service) is also reported there. Never raises :class:`ModelServiceError`.
    """
    try:
        remote = RemoteSegmenter(
            url, threshold, timeout=timeout, retries=retries, check=False, sleep=sleep
        )
        remote.refresh_info(timeout=min(timeout, start_timeout), retries=0)
    except ModelServiceError as exc:
        return EngineChoice(fallback_factory(), exc)
    return EngineChoice(remote, None)
