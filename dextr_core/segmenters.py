"""Segmenters: image + extreme points -> mask. DEXTR (or SAM, :mod:`dextr_core.sam`) when its
weights are there, else GrabCut.

Both follow the :class:`Segmenter` protocol. A segmenter is shared by every Streamlit session of a
server process (one cached instance, called from several threads): :class:`DextrSegmenter` runs
one forward at a time behind a lock, pre- and post-processing run outside it.

Keras (and its backend) is imported only when a :class:`DextrSegmenter` is created, so
``load_segmenter`` without a weights file stays light.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from . import ir_cache
from . import precision as precision_check
from . import runtime as runtime_choice
from .batching import DynamicBatcher
from .processing import DEFAULT_THRESHOLD, make_input, paste_mask, paste_probability
from .weights import (
    DEFAULT_WEIGHTS_NAME,
    DOWNLOAD_COMMAND,
    REMEDY,
    WeightsError,
    apply_weights,
    read_weight_file,
)

__all__ = [
    "DEFAULT_WEIGHTS_PATH",
    "DOWNLOAD_COMMAND",
    "DextrSegmenter",
    "Segmenter",
    "load_segmenter",
]

#: Where the weights are looked for when no path is given: models/ of this repository.
DEFAULT_WEIGHTS_PATH = Path(__file__).resolve().parents[1] / "models" / DEFAULT_WEIGHTS_NAME

#: Runtimes :class:`DextrSegmenter` can run the network with (see ``runtime=``).
RUNTIMES = runtime_choice.RUNTIMES
#: OpenVINO's names of the precisions (``INFERENCE_PRECISION_HINT``).
OPENVINO_PRECISIONS = {"f32": "f32", "bf16": "bf16", "f16": "f16"}

logger = logging.getLogger(__name__)
#: Largest difference of an optional runtime's probabilities from Keras's that is accepted.
FIDELITY_TOLERANCE = 1e-3
#: Largest batch of concurrent calls run as one forward on a GPU (``max_batch=None``).
GPU_MAX_BATCH = 8


@runtime_checkable
class Segmenter(Protocol):
    """What the app needs from a segmenter. Points are ``(N, 2)`` ``(x, y)`` full-image pixels."""

    name: str  # shown to users, e.g. "DEXTR (dextr_pascal-sbd.h5)" / "GrabCut fallback"
    is_fallback: bool
    #: True when a model service computes the masks (:class:`dextr_core.remote.RemoteSegmenter`):
    #: it may stop answering, and the pages then offer to run the model in this process.
    is_remote: bool

    def predict(self, image, points) -> np.ndarray:
        """Foreground probability, float32 ``(H, W)`` in [0, 1]."""
        ...

    def segment(self, image, points) -> np.ndarray:
        """Object mask, bool ``(H, W)``."""
        ...


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not 0.0 < t < 1.0:
        raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {threshold!r}")
    return t


def _export_openvino(model, folder: Path) -> Path:
    """Export ``model`` to OpenVINO IR (``dextr.xml`` + ``dextr.bin``) in ``folder``."""
    xml = folder / "dextr.xml"
    with contextlib.redirect_stdout(io.StringIO()):  # export prints "Saved ..."
        model.export(str(xml), format="openvino", verbose=False)
    return xml


def _compile_openvino(
    xml: Path, precision: str = "f32", batch: int = 1
) -> Callable[[np.ndarray], np.ndarray]:
    """Compile an exported IR for the CPU, for a static batch of one (``batch=-1``: any batch,
    for :class:`dextr_core.batching.DynamicBatcher`), in ``precision`` (``"f32"``, or
    ``"bf16"`` / ``"f16"`` which :mod:`dextr_core.precision` checks first).

    The CPU plugin would otherwise pick bfloat16 on CPUs that have it, which moves the
    probabilities by ~1e-2 (and is slower on CPUs without AMX); f32 keeps them within ~1e-6 of
    Keras. The static shape is a few % faster than a dynamic batch.
    """
    import openvino as ov

    core = ov.Core()
    network = core.read_model(str(xml))
    network.reshape([batch, 512, 512, 4])
    hint = OPENVINO_PRECISIONS[precision]
    compiled = core.compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": hint})
    if precision != "f32":  # the plugin quietly runs float32 where the CPU lacks the type
        effective = compiled.get_property("INFERENCE_PRECISION_HINT")
        effective = getattr(effective, "get_type_name", lambda: str(effective))()
        if effective != hint:
            raise ValueError(
                f"OpenVINO cannot run DEXTR in {precision_check.PRECISION_NAME[precision]} on "
                f"this CPU (its plugin would run {effective}); use precision='f32' or 'auto'"
            )
    request = compiled.create_infer_request()
    return lambda batch: np.asarray(request.infer({0: batch})[0])


def resolve_runtime(runtime: str = "auto") -> str:
    """The runtime ``make_forward(model, runtime)`` will try first (see there): ``"auto"``
    resolved through ``DEXTR_RUNTIME``, the Keras backend and the visible devices
    (:func:`dextr_core.runtime.resolve`: a GPU first, else OpenVINO, else the graph)."""
    return runtime_choice.resolve(runtime).runtime


def make_forward(
    model, runtime: str = "auto", ir_folder: Path | None = None
) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """A function running ``model`` on a float32 ``(1, 512, 512, 4)`` batch -> numpy output.

    ``runtime``: ``"openvino"`` (the model exported to OpenVINO and run by its CPU plugin in
    float32; needs ``pip install openvino`` and the TensorFlow backend), ``"xla"``
    (``tf.function(jit_compile=True)``), ``"graph"`` (``tf.function`` without XLA), ``"eager"``
    (``model(x, training=False)``), ``"predict"`` (``model.predict_on_batch``; jit-compiled by
    Keras on JAX), or ``"auto"``: the ``DEXTR_RUNTIME`` environment variable if set, else
    :func:`dextr_core.runtime.choose`: on a visible GPU ``"graph"`` (TensorFlow) or
    ``"predict"`` (JAX, PyTorch); on the CPU ``"openvino"`` when it is installed (TensorFlow
    backend; fastest on CPU, see docs/benchmarks-dextr.md), ``"graph"`` otherwise or when the
    export fails, ``"predict"`` on the other backends.
    ``ir_folder``: where the OpenVINO export is written (kept there); default a temporary folder.
    Returns the function and the runtime used. Not thread-safe: callers serialise calls.
    """
    chosen = resolve_runtime(runtime)
    automatic = runtime == "auto" and (os.environ.get("DEXTR_RUNTIME") or "auto") == "auto"
    import keras

    if chosen == "openvino":
        try:
            if ir_folder is not None:
                return _compile_openvino(_export_openvino(model, ir_folder)), chosen
            with tempfile.TemporaryDirectory(prefix="dextr_openvino_") as folder:
                return _compile_openvino(_export_openvino(model, Path(folder))), chosen
        except Exception as exc:
            if not automatic:
                raise  # asked for by name: say why it does not work
            # an optional accelerator must not stop the app
            warnings.warn(
                f"OpenVINO export failed ({exc}); running DEXTR with TensorFlow instead",
                RuntimeWarning,
                stacklevel=2,
            )
            chosen = "graph"
    if chosen in ("xla", "graph"):
        import tensorflow as tf

        compiled = tf.function(
            lambda batch: model(batch, training=False),
            jit_compile=chosen == "xla",
            reduce_retracing=True,
        )
        return (lambda batch: compiled(batch).numpy()), chosen
    if chosen == "eager":
        return (lambda batch: keras.ops.convert_to_numpy(model(batch, training=False))), chosen
    return (lambda batch: np.asarray(model.predict_on_batch(batch))), chosen


class DextrSegmenter:
    """DEXTR with the published weights: builds the network and loads the file once.

    ``weights_path``: a published DEXTR HDF5 file (``dextr_pascal-sbd.h5``, ``dextr_pascal.h5`` or
    ``dextr_coco.h5``); a broken or wrong file raises :class:`dextr_core.weights.WeightsError`
    before the network is built. ``threshold``: mask = probability > threshold (0 < t < 1).
    ``runtime``: see :func:`make_forward`; the chosen one is in ``self.runtime`` and the device
    it computes on in ``self.device`` (:class:`dextr_core.runtime.Device`). With OpenVINO
    one input is run through both OpenVINO and Keras and OpenVINO is kept only if they agree
    within :data:`FIDELITY_TOLERANCE`; an export that passed is kept in :mod:`dextr_core.ir_cache`
    and reused by later starts with the same weights (no export, no check).

    ``precision``: ``"auto"`` (default; ``DEXTR_PRECISION`` overrides it), ``"f32"``, ``"bf16"``
    or ``"f16"``. ``auto`` measures the reduced precisions the device runs faster (bfloat16 on
    AMX CPUs through OpenVINO, float16/bfloat16 on GPUs) against float32 on fixed check inputs
    and keeps one only if its masks and probabilities agree and it is faster
    (:mod:`dextr_core.precision`); the decision is cached with the export. ``self.precision``
    is what runs, ``self.precision_decision`` holds the check's figures, ``self.runtime_info``
    says it in one line (the sidebar shows it). ``"f32"`` is exactly the float32 path of
    before; ``"bf16"`` / ``"f16"`` run that precision unchecked.

    ``max_batch``: how many concurrent calls (one per annotator clicking) may run as one
    batched forward (:class:`dextr_core.batching.DynamicBatcher`); ``None``: ``$DEXTR_MAX_BATCH``
    if set, else :data:`GPU_MAX_BATCH` on a GPU and 1 on a CPU (one forward at a time: a batch
    on a busy CPU costs as much as the forwards one after another, docs/benchmarks-dextr.md).

    ``warm_up``: run one forward now (the graph is traced and compiled on the first call), so
    the first click is not slow. Safe to call from several threads.
    """

    is_fallback = False
    is_remote = False

    def __init__(
        self,
        weights_path: str | os.PathLike,
        threshold: float = DEFAULT_THRESHOLD,
        *,
        runtime: str = "auto",
        precision: str = "auto",
        max_batch: int | None = None,
        warm_up: bool = True,
    ):
        self.weights_path = Path(weights_path)
        self.threshold = _check_threshold(threshold)
        requested_precision = precision_check.requested_precision(precision)
        max_batch = _requested_max_batch(max_batch)
        weights = read_weight_file(self.weights_path)  # fails fast, before the slow build
        choice = runtime_choice.resolve(runtime)  # bad runtime names fail before the build

        from .network import build_dextr

        self.model = build_dextr()
        apply_weights(self.model, weights, self.weights_path)
        del weights
        self.name = f"DEXTR ({self.weights_path.name})"
        self._lock = threading.Lock()
        self.device = choice.device
        self._cache_key = None
        with tempfile.TemporaryDirectory(prefix="dextr_openvino_") as folder:
            # an OpenVINO export of these weights that passed the fidelity check before, else afresh
            self._forward, self.runtime, xml = self._cached_openvino(choice)
            if self._forward is None:
                self._forward, self.runtime = make_forward(self.model, runtime, Path(folder))
                if self.runtime == "openvino":
                    xml = Path(folder) / "dextr.xml"
                    if self._check_fidelity() and self._cache_key:
                        ir_cache.store(self._cache_key, Path(folder))
            if self.runtime != choice.runtime:  # OpenVINO did not work: Keras on its device
                self.device = runtime_choice.resolve(self.runtime).device
            self.precision_decision, self._forward = self._choose_precision(
                requested_precision, xml if self.runtime == "openvino" else None
            )
            self.precision = self.precision_decision.precision
            if max_batch is None:
                max_batch = GPU_MAX_BATCH if self.device.kind == "gpu" else 1
            self.max_batch = max_batch
            self._batcher = None
            if max_batch > 1:
                forward = self._forward
                if self.runtime == "openvino":  # the default export is for a batch of one
                    forward = _compile_openvino(xml, self.precision, batch=-1)
                sizes = sorted({min(2**i, max_batch) for i in range(max_batch.bit_length() + 1)})
                self._batcher = DynamicBatcher(forward, max_batch, sizes=sizes)
        self.runtime_info = runtime_choice.describe_runtime(self.runtime, self.device,
                                                            self.precision_decision)
        if self.max_batch > 1:
            self.runtime_info += f"; up to {self.max_batch} concurrent clicks in one forward"
        logger.info("%s runs on %s (%s)", self.name, self.runtime_info, choice.reason)
        if warm_up:
            self.predict_network(np.zeros((512, 512, 4), dtype=np.float32))

    def _cached_openvino(self, choice):
        """``(forward, "openvino", xml)`` from the IR cache (:mod:`dextr_core.ir_cache`) when
        OpenVINO is the runtime and an export of these weights is cached, else ``(None, None,
        None)``."""
        if choice.runtime != "openvino" or ir_cache.cache_dir() is None:
            return None, None, None
        self._cache_key = ir_cache.cache_key(self.weights_path)
        xml = ir_cache.lookup(self._cache_key)
        if xml is None:
            return None, None, None
        try:
            return _compile_openvino(xml), "openvino", xml
        except Exception as exc:  # a damaged entry: export afresh
            warnings.warn(
                f"Ignoring the cached OpenVINO export {xml.parent} ({exc}); exporting again",
                RuntimeWarning,
                stacklevel=3,
            )
            ir_cache.discard(self._cache_key)
            return None, None, None

    def _choose_precision(self, requested: str, xml: Path | None):
        """``(Decision, forward)`` for the ``requested`` precision (see the class docstring)."""
        Decision = precision_check.Decision

        def make_candidate(precision: str):
            if self.runtime == "openvino":
                return _compile_openvino(xml, precision)
            reduced = precision_check.reduced_model(self.model, precision)
            forward, _ = make_forward(reduced, self.runtime)
            return forward

        if requested == "f32":
            return Decision("f32", note="asked for"), self._forward
        if requested != "auto":
            if requested not in self.device.precisions:
                warnings.warn(
                    f"{precision_check.PRECISION_NAME[requested]} is not faster than float32 "
                    f"on {self.device.label} as far as DEXTR knows; running it as asked",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return Decision(requested, note="asked for, not checked"), make_candidate(requested)
        offered = self.device.precisions
        if offered and ir_cache.cache_dir() is not None and self._cache_key is None:
            self._cache_key = ir_cache.cache_key(self.weights_path)
        facts = {
            "runtime": self.runtime,
            "device": self.device.label,
            "framework": self.device.framework,
            "offered": list(offered),
            "threshold": self.threshold,
            "weights": str(self.weights_path),
        }
        tag = ir_cache.decision_tag(**{k: v for k, v in facts.items() if k != "weights"})
        key = self._cache_key

        def load():
            return ir_cache.lookup_decision(key, tag) if key else None

        def save(data):
            if key:
                ir_cache.store_decision(key, tag, data, facts)

        return precision_check.choose_precision(
            offered, self._forward, make_candidate, threshold=self.threshold, load=load, save=save
        )

    def _check_fidelity(self) -> bool:
        """Compare the optional runtime with Keras on one input; fall back to Keras (with a
        warning) if they differ by more than :data:`FIDELITY_TOLERANCE`. True if kept."""
        x = np.random.default_rng(0).uniform(0, 255, (1, 512, 512, 4)).astype(np.float32)
        keras_forward, keras_runtime = make_forward(self.model, "graph")
        difference = float(np.abs(self._forward(x) - keras_forward(x)).max())
        if difference <= FIDELITY_TOLERANCE:
            return True
        warnings.warn(
            f"{self.runtime} differs from Keras by {difference:.2g} (more than "
            f"{FIDELITY_TOLERANCE:g}); running DEXTR with Keras ({keras_runtime}) instead",
            RuntimeWarning,
            stacklevel=3,
        )
        self._forward, self.runtime = keras_forward, keras_runtime
        return False

    def __repr__(self) -> str:
        return f"DextrSegmenter({str(self.weights_path)!r}, threshold={self.threshold})"

    def predict_network(self, x: np.ndarray) -> np.ndarray:
        """Run the network on one input ``float32 (512, 512, 4)``; returns ``float32 (512, 512)``
        probabilities in [0, 1]. One forward at a time (thread-safe)."""
        if self._batcher is not None:  # concurrent calls share one forward
            return np.asarray(self._batcher(x), dtype=np.float32)[:, :, 0]
        batch = np.ascontiguousarray(x, dtype=np.float32)[None]
        with self._lock:
            out = self._forward(batch)
        return np.asarray(out, dtype=np.float32)[0, :, :, 0]

    def predict(self, image, points) -> np.ndarray:
        """Foreground probability ``float32 (H, W)`` in [0, 1] for the object with extreme
        ``points`` (``(N, 2)`` ``(x, y)`` full-image pixels, N >= 4) in ``image`` (``(H, W[, C])``,
        any type :func:`dextr_core.images.to_rgb_uint8` accepts). Zero outside the points' box.
        Raises ``ValueError`` for invalid points (see :func:`dextr_core.processing.validate_points`).
        """
        x, box = make_input(image, points)
        return paste_probability(self.predict_network(x), box, np.shape(image))

    def segment(self, image, points) -> np.ndarray:
        """Object mask ``bool (H, W)``: probability > ``self.threshold``; arguments as
        :meth:`predict`."""
        x, box = make_input(image, points)
        return paste_mask(self.predict_network(x), box, np.shape(image), self.threshold)


def _requested_max_batch(max_batch: int | None) -> int | None:
    """``max_batch`` or ``$DEXTR_MAX_BATCH`` (None: the device decides); ``ValueError`` unless a
    whole number >= 1."""
    value = max_batch
    if value is None and os.environ.get("DEXTR_MAX_BATCH"):
        value = os.environ["DEXTR_MAX_BATCH"].strip()
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or str(number) != str(value).strip():
        raise ValueError(
            f"max_batch / DEXTR_MAX_BATCH must be a whole number >= 1, got {value!r} "
            "(1: one forward at a time)"
        )
    return number


def load_segmenter(
    weights_path: str | os.PathLike | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    sam_prompt: str = "box+points",
) -> Segmenter:
    """The segmenter the app uses, chosen by the weights file's contents: DEXTR for a DEXTR
    HDF5 file, :class:`dextr_core.sam.SamSegmenter` for a SAM checkpoint (PyTorch file: SAM
    ViT-B/L/H or MobileSAM, ``sam_prompt`` one of :data:`dextr_core.sam.PROMPTS`), the GrabCut
    fallback when the file does not exist.

    ``weights_path`` defaults to :data:`DEFAULT_WEIGHTS_PATH` (``models/dextr_pascal-sbd.h5``).
    ``threshold`` is DEXTR's (SAM keeps its own, logit > 0). A file that exists but is broken,
    or is neither DEXTR's nor SAM's, raises :class:`dextr_core.weights.WeightsError` naming what
    it found (the app shows it) instead of silently falling back. Get the weights with
    :data:`DOWNLOAD_COMMAND` (SAM: ``python -m dextr_core.download mobile-sam``).
    """
    threshold = _check_threshold(threshold)
    path = Path(weights_path) if weights_path is not None else DEFAULT_WEIGHTS_PATH
    if path.is_file():
        from . import sam

        try:
            kind = sam.describe_file(path)
        except OSError as exc:
            raise WeightsError(f"Weights file {path} cannot be read ({exc}). {REMEDY}") from exc
        if kind == "torch":
            return sam.SamSegmenter(path, prompt=sam_prompt)
        if kind != "hdf5":
            raise WeightsError(
                f"Weights file {path} is neither DEXTR weights (an HDF5 file) nor a SAM "
                f"checkpoint (a PyTorch file): it is {kind}. {REMEDY} For SAM put "
                f"mobile_sam.pt or sam_vit_b_01ec64.pth there (`{sam.DOWNLOAD_COMMAND}`)."
            )
    if path.exists():
        return DextrSegmenter(path, threshold)
    from .fallback import GrabCutSegmenter

    return GrabCutSegmenter().warm_up()
