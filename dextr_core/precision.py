"""Reduced precision (bfloat16 / float16) for DEXTR only where it is measured to be safe and fast.

How close a reduced-precision network stays to float32 depends on the weights (with seeded
weights bfloat16 moved masks to IoU 0.74-0.98 of float32's, issue 12), so ``precision="auto"``
never trusts a device's offer blindly: :func:`measure` runs float32 and the candidate on fixed
check inputs (:func:`check_inputs`: the shipped ``samples/images`` photos, each with point sets
from :func:`check_points`, a deterministic rule) and :func:`choose_precision` keeps the candidate
only if every mask (probability > the segmenter's threshold, on the 512 x 512 network output)
matches float32's at IoU >= :data:`MIN_IOU`, every probability is within
:data:`MAX_PROBABILITY_DIFFERENCE`, and it is faster per forward than float32; else float32.

The decision is kept in :mod:`dextr_core.ir_cache` under the weights' key (so it is made again
when the weights, the network code or the framework versions change) and the device, runtime
and threshold it was made for.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "MAX_PROBABILITY_DIFFERENCE",
    "MIN_IOU",
    "PRECISIONS",
    "Decision",
    "PrecisionCheck",
    "check_inputs",
    "check_points",
    "choose_precision",
    "mask_iou",
    "measure",
    "reduced_model",
    "requested_precision",
]

#: Values of ``DextrSegmenter(precision=...)`` and ``DEXTR_PRECISION``.
PRECISIONS = ("auto", "f32", "bf16", "f16")
#: Smallest IoU of a reduced-precision mask with float32's that is accepted (each check input).
MIN_IOU = 0.995
#: Largest absolute probability difference from float32 that is accepted (any pixel).
MAX_PROBABILITY_DIFFERENCE = 0.02
#: Where the check photos are: the repository's shipped samples.
SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "images"
#: How the precisions are named in messages.
PRECISION_NAME = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}
#: Keras dtype policies of the reduced precisions (weights stay float32, compute in the type).
POLICIES = {"bf16": "mixed_bfloat16", "f16": "mixed_float16"}

Forward = Callable[[np.ndarray], np.ndarray]


def requested_precision(precision: str | None = "auto") -> str:
    """``precision`` checked against :data:`PRECISIONS`; ``"auto"`` (or None) is replaced by
    ``$DEXTR_PRECISION`` when that is set. Raises ``ValueError`` naming the valid values."""
    value = precision or "auto"
    source = "precision"
    if value == "auto" and os.environ.get("DEXTR_PRECISION"):
        value, source = os.environ["DEXTR_PRECISION"].strip().lower(), "DEXTR_PRECISION"
    if value not in PRECISIONS:
        raise ValueError(
            f"{source} must be one of {', '.join(PRECISIONS)}, got {value!r} "
            "(auto: a faster precision only where it is checked against float32)"
        )
    return value


def check_points(height: int, width: int) -> list[np.ndarray]:
    """Two sets of four ``(x, y)`` extreme points for an ``height x width`` photo, from fixed
    fractions of its size: a large central object and a smaller one lower left. Deterministic,
    so every start checks the same inputs."""
    fractions = [  # (left x, right x, top y, bottom y, y of left/right, x of top/bottom)
        (0.20, 0.80, 0.15, 0.85, (0.55, 0.45), (0.45, 0.55)),
        (0.05, 0.50, 0.30, 0.95, (0.70, 0.50), (0.30, 0.25)),
    ]
    sets = []
    for x0, x1, y0, y1, (yl, yr), (xt, xb) in fractions:
        pts = [(x0 * width, yl * height), (x1 * width, yr * height)]
        pts += [(xt * width, y0 * height), (xb * width, y1 * height)]
        sets.append(np.array([[round(x), round(y)] for x, y in pts], dtype=np.int64))
    return sets


def check_inputs(folder: Path = SAMPLES) -> list[np.ndarray]:
    """The network inputs the check runs: ``float32 (512, 512, 4)`` each, every ``*.jpg`` in
    ``folder`` (sorted) with each :func:`check_points` set. Empty when there are no photos."""
    from PIL import Image

    from .processing import make_input

    inputs = []
    for path in sorted(Path(folder).glob("*.jpg")):
        with Image.open(path) as photo:
            image = np.asarray(photo.convert("RGB"))
        for points in check_points(*image.shape[:2]):
            inputs.append(make_input(image, points)[0])
    return inputs


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks; 1.0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@dataclass(frozen=True)
class PrecisionCheck:
    """Figures of one candidate precision against float32 on the check inputs.

    ``min_iou``: smallest mask IoU over the inputs; ``max_difference``: largest absolute
    probability difference; ``reference_s`` / ``candidate_s``: median seconds per forward
    (after one warm-up call each); ``accurate``: within :data:`MIN_IOU` and
    :data:`MAX_PROBABILITY_DIFFERENCE`; ``kept``: accurate and faster.
    """

    precision: str
    inputs: int
    min_iou: float
    max_difference: float
    reference_s: float
    candidate_s: float
    accurate: bool
    kept: bool

    def summary(self) -> str:
        """One line for logs and the sidebar, e.g. ``"min IoU 0.998, max |dp| 0.004 on 12
        inputs; 0.18 s vs 1.07 s per forward"``."""
        return (
            f"min IoU {self.min_iou:.3f}, max |dp| {self.max_difference:.3f} on {self.inputs} "
            f"inputs; {self.candidate_s:.3g} s vs {self.reference_s:.3g} s per forward"
        )


def measure(
    reference: Forward,
    candidate: Forward,
    inputs: list[np.ndarray],
    *,
    precision: str,
    threshold: float,
    clock: Callable[[], float] = time.perf_counter,
) -> PrecisionCheck:
    """Run ``reference`` (float32) and ``candidate`` on every input (``float32 (512, 512, 4)``;
    the forwards take and return batches ``(1, 512, 512, c)``) and compare masks at
    ``threshold`` and probabilities. ``clock`` times the forwards (injectable for tests)."""
    if not inputs:
        raise ValueError("the precision check needs at least one input")

    def run(forward: Forward, x: np.ndarray) -> tuple[np.ndarray, float]:
        start = clock()
        out = np.asarray(forward(np.ascontiguousarray(x, dtype=np.float32)[None]))
        return out.astype(np.float32).reshape(x.shape[:2]), clock() - start

    run(reference, inputs[0])  # warm-up: first calls compile / trace
    run(candidate, inputs[0])
    ious, differences, reference_times, candidate_times = [], [], [], []
    for x in inputs:
        want, t_ref = run(reference, x)
        got, t_cand = run(candidate, x)
        ious.append(mask_iou(want > threshold, got > threshold))
        differences.append(float(np.abs(got - want).max()))
        reference_times.append(t_ref)
        candidate_times.append(t_cand)
    min_iou, max_difference = min(ious), max(differences)
    accurate = min_iou >= MIN_IOU and max_difference <= MAX_PROBABILITY_DIFFERENCE
    reference_s = statistics.median(reference_times)
    candidate_s = statistics.median(candidate_times)
    return PrecisionCheck(
        precision=precision,
        inputs=len(inputs),
        min_iou=min_iou,
        max_difference=max_difference,
        reference_s=reference_s,
        candidate_s=candidate_s,
        accurate=accurate,
        kept=accurate and candidate_s < reference_s,
    )


@dataclass(frozen=True)
class Decision:
    """The precision that runs and why: ``checks`` holds every candidate measured (in the order
    tried); ``cached`` is True when the decision was read from the cache, not measured now."""

    precision: str
    checks: tuple[PrecisionCheck, ...] = ()
    note: str = ""
    cached: bool = False

    @property
    def check(self) -> PrecisionCheck | None:
        """The check of the precision that runs (None for float32)."""
        return next((c for c in self.checks if c.precision == self.precision), None)

    def to_json(self) -> dict:
        return {
            "precision": self.precision,
            "note": self.note,
            "checks": [asdict(c) for c in self.checks],
        }

    @classmethod
    def from_json(cls, data: dict) -> Decision:
        checks = tuple(PrecisionCheck(**c) for c in data["checks"])
        return cls(str(data["precision"]), checks, str(data.get("note", "")), cached=True)


def choose_precision(
    offered: tuple[str, ...],
    reference: Forward,
    make_candidate: Callable[[str], Forward],
    *,
    threshold: float,
    inputs: Callable[[], list[np.ndarray]] | None = None,
    load: Callable[[], dict | None] = lambda: None,
    save: Callable[[dict], None] = lambda data: None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[Decision, Forward]:
    """``precision="auto"``: the first of ``offered`` (reduced precisions, best first) that
    :func:`measure` keeps, else float32. Returns the decision and the forward to run.

    ``reference``: the float32 forward; ``make_candidate(precision)``: builds the forward for a
    precision (only called for one that is measured or was kept before; an exception means the
    runtime cannot run it here, which refuses it); ``inputs``: the check
    inputs (default :func:`check_inputs`; called only when something is measured); ``load`` / ``save``: the cached decision
    (:meth:`Decision.to_json`); a cached decision is used as it is (no forward is measured).
    """
    if not offered:
        return Decision("f32", note="the device offers no faster precision"), reference
    cached = load()
    if cached is not None:
        try:
            decision = Decision.from_json(cached)
        except (KeyError, TypeError, ValueError):
            decision = None  # unreadable: decide again
        if decision is not None and decision.precision in ("f32", *offered):
            forward = (
                reference if decision.precision == "f32" else make_candidate(decision.precision)
            )
            return decision, forward
    check_set = (inputs or check_inputs)()
    if not check_set:
        return Decision("f32", note="no check photos in samples/images"), reference
    checks, unavailable = [], []
    for precision in offered:
        try:
            candidate = make_candidate(precision)
        except Exception as exc:  # the runtime cannot build it here: float32 it is
            unavailable.append(f"{precision} unavailable ({exc})")
            continue
        check = measure(
            reference, candidate, check_set, precision=precision, threshold=threshold, clock=clock
        )
        checks.append(check)
        if check.kept:
            decision = Decision(precision, tuple(checks))
            save(decision.to_json())
            return decision, candidate
        del candidate
    names = [f"{c.precision} {'not faster' if c.accurate else 'differs'}" for c in checks]
    decision = Decision("f32", tuple(checks), note="refused: " + ", ".join(names + unavailable))
    save(decision.to_json())
    return decision, reference


def reduced_model(model, precision: str, build: Callable[[], object] | None = None):
    """A copy of the Keras ``model`` that computes in ``precision`` (``"bf16"`` / ``"f16"``; Keras
    mixed-precision policy, weights kept float32) with the same weights. ``build`` makes the
    empty network (default :func:`dextr_core.network.build_dextr`); it is called with the policy
    set process-wide, which is restored afterwards."""
    import keras

    if build is None:
        from .network import build_dextr

        build = build_dextr
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[precision])
    try:
        copy = build()
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights(model.get_weights())
    return copy
