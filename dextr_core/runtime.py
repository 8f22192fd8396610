"""Which runtime and device run the DEXTR network: a pure choice over a list of devices.

:func:`probe_devices` asks the installed frameworks what this process can compute on (only the
Keras backend the process runs, plus OpenVINO's CPU plugin under TensorFlow); :func:`choose`
turns a requested runtime and such a list into a :class:`Choice` without touching any
framework, so tests pass made-up device lists. The rule for ``"auto"``:

1. a visible GPU of the process's Keras backend: TensorFlow's (run as a ``tf.function``
   graph), else JAX's or PyTorch's CUDA device when Keras runs on that backend
   (``predict_on_batch``);
2. else OpenVINO's CPU plugin (TensorFlow backend, ``openvino`` installed);
3. else the TensorFlow graph on the CPU (``predict_on_batch`` on the other backends).

A device lists the reduced precisions it runs *faster* than float32 (:attr:`Device.precisions`,
fastest first): bfloat16 on CPUs with AMX (OpenVINO), float16 and bfloat16 on GPUs that have
tensor cores for them. :mod:`dextr_core.precision` decides by measurement whether one is used.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import precision

__all__ = [
    "RUNTIMES", "Choice", "Device", "choose", "cpu_flags", "cpu_name", "openvino_device",
    "probe_devices",
]

#: Runtimes :class:`dextr_core.segmenters.DextrSegmenter` can run the network with.
RUNTIMES = ("auto", "openvino", "xla", "graph", "eager", "predict")
#: Runtimes that exist only on the TensorFlow Keras backend.
TENSORFLOW_ONLY = ("openvino", "xla", "graph")


@dataclass(frozen=True)
class Device:
    """One thing the network can run on.

    ``framework``: ``"tensorflow"``, ``"jax"``, ``"torch"`` or ``"openvino"``; ``kind``:
    ``"gpu"`` or ``"cpu"``; ``name``: shown to users (``"NVIDIA H200"``, ``"AMD EPYC"``);
    ``precisions``: reduced precisions this device runs faster than float32, fastest/most
    accurate first (``("bf16",)`` for an AMX CPU, ``("f16", "bf16")`` for a recent GPU).
    """

    framework: str
    kind: str
    name: str
    precisions: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        """``"GPU (NVIDIA H200)"`` / ``"CPU (AMD EPYC)"``."""
        return f"{self.kind.upper()} ({self.name})" if self.name else self.kind.upper()


@dataclass(frozen=True)
class Choice:
    """The runtime :func:`choose` picked, the device it computes on, and why."""

    runtime: str
    device: Device
    reason: str


_FRAMEWORK_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


def _first(devices, framework: str, kind: str) -> Device | None:
    return next((d for d in devices if d.framework == framework and d.kind == kind), None)


def choose(requested: str, backend: str, devices: list[Device]) -> Choice:
    """The runtime for ``requested`` (one of :data:`RUNTIMES`) on Keras ``backend``
    (``"tensorflow"``, ``"jax"`` or ``"torch"``) given the visible ``devices``.

    Pure: no framework is imported. Raises ``ValueError`` for an unknown runtime or one that
    needs another backend (``xla``/``graph``/``openvino`` need TensorFlow) and when
    ``"openvino"`` is asked for but no OpenVINO CPU device is in ``devices``.
    """
    if requested not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {requested!r}")
    if requested in TENSORFLOW_ONLY and backend != "tensorflow":
        raise ValueError(f"runtime {requested!r} needs the TensorFlow Keras backend, not {backend}")
    own_gpu = _first(devices, backend, "gpu")
    own_cpu = _first(devices, backend, "cpu") or Device(backend, "cpu", cpu_name())
    openvino = _first(devices, "openvino", "cpu")
    framework = _FRAMEWORK_NAMES.get(backend, backend)
    if requested == "openvino":
        if openvino is None:
            raise ValueError(
                "runtime 'openvino' needs the openvino package (pip install openvino); "
                "or set DEXTR_RUNTIME=auto"
            )
        return Choice("openvino", openvino, "asked for")
    if requested != "auto":
        return Choice(requested, own_gpu or own_cpu, "asked for")
    tf_runtime = "graph" if backend == "tensorflow" else "predict"
    if own_gpu is not None:
        return Choice(tf_runtime, own_gpu, f"{framework} sees a GPU")
    if backend == "tensorflow" and openvino is not None:
        return Choice("openvino", openvino, "no GPU visible; OpenVINO is installed")
    if backend == "tensorflow":
        return Choice("graph", own_cpu, "no GPU visible and OpenVINO is not installed")
    return Choice("predict", own_cpu, f"no GPU visible to {framework}")


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``"CPU"`` where that is not readable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where that is not readable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def openvino_cpu_precisions(capabilities, flags) -> tuple[str, ...]:
    """Reduced precisions OpenVINO's CPU plugin runs faster than float32: bfloat16 only with AMX
    (``amx_bf16``). ``capabilities``: the plugin's ``OPTIMIZATION_CAPABILITIES``; ``flags``: CPU
    flags. AVX512-BF16 without AMX is slower than float32 for this network (1.5 s vs 2.35 s
    measured, docs/benchmarks-dextr.md), so it is not offered."""
    return ("bf16",) if "BF16" in set(capabilities) and "amx_bf16" in set(flags) else ()


def gpu_precisions(compute_capability: tuple[int, int] | None) -> tuple[str, ...]:
    """Reduced precisions an NVIDIA GPU runs on tensor cores: float16 from compute capability
    7.0 (Volta), bfloat16 from 8.0 (Ampere); float16 first (more mantissa bits, same speed)."""
    if compute_capability is None:
        return ("f16", "bf16")  # unknown (JAX does not say): let the check decide
    if compute_capability >= (8, 0):
        return ("f16", "bf16")
    return ("f16",) if compute_capability >= (7, 0) else ()


def probe_devices(backend: str) -> list[Device]:
    """What this process can run the network on: the devices of Keras ``backend`` (GPUs first,
    then its CPU) and, under TensorFlow with ``openvino`` installed, OpenVINO's CPU plugin.
    Imports only the frameworks involved; a framework that fails to answer contributes its
    CPU only."""
    devices: list[Device] = []
    if backend == "tensorflow":
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                details = tf.config.experimental.get_device_details(gpu)
            except Exception:  # details are informational
                details = {}
            name = details.get("device_name") or gpu.name
            devices.append(
                Device("tensorflow", "gpu", name, gpu_precisions(details.get("compute_capability")))
            )
    elif backend == "jax":
        import jax

        for dev in jax.devices():
            if dev.platform in ("gpu", "cuda", "rocm"):
                devices.append(Device("jax", "gpu", dev.device_kind, gpu_precisions(None)))
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            capability = tuple(torch.cuda.get_device_capability())
            devices.append(
                Device("torch", "gpu", torch.cuda.get_device_name(), gpu_precisions(capability))
            )
    devices.append(Device(backend, "cpu", cpu_name()))
    if backend == "tensorflow":
        openvino = openvino_device()
        if openvino is not None:
            devices.append(openvino)
    return devices


def openvino_device() -> Device | None:
    """OpenVINO's CPU plugin as a :class:`Device`, or None when openvino is not installed or
    cannot start."""
    if importlib.util.find_spec("openvino") is None:
        return None
    try:
        import openvino as ov

        core = ov.Core()
        if "CPU" not in core.available_devices:
            return None
        capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        name = core.get_property("CPU", "FULL_DEVICE_NAME")
        return Device("openvino", "cpu", name, openvino_cpu_precisions(capabilities, cpu_flags()))
    except Exception:  # an OpenVINO that cannot start is as good as none
        return None


def resolve(runtime: str = "auto", devices: list[Device] | None = None) -> Choice:
    """:func:`choose` for this process: ``"auto"`` goes through ``DEXTR_RUNTIME`` first, the
    backend is Keras's, ``devices`` default to :func:`probe_devices`."""
    if runtime == "auto":
        runtime = os.environ.get("DEXTR_RUNTIME", "auto") or "auto"
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    import keras

    backend = keras.backend.backend()
    return choose(runtime, backend, probe_devices(backend) if devices is None else devices)


#: How the runtimes are named in :attr:`DextrSegmenter.runtime_info`.
RUNTIME_NAMES = {
    "openvino": "OpenVINO",
    "xla": "TensorFlow XLA",
    "graph": "TensorFlow graph",
    "eager": "TensorFlow eager",
    "predict": "Keras predict",
    "torch": "PyTorch",  # SAM's encoder (dextr_core.sam)
}


def describe_runtime(runtime: str, device, decision) -> str:
    """One line saying what runs DEXTR, e.g. ``"OpenVINO on CPU (Xeon), bfloat16 (checked: min
    IoU 0.998, ...)"`` or ``"OpenVINO on CPU (AMD EPYC), float32 (the device offers no faster
    precision)"``. ``device``: :class:`dextr_core.runtime.Device`; ``decision``:
    :class:`dextr_core.precision.Decision`."""
    name = RUNTIME_NAMES.get(runtime, runtime)
    if runtime == "predict":
        name = f"Keras {device.framework}".replace("jax", "JAX").replace("torch", "PyTorch")
    text = f"{name} on {device.label}, {precision.PRECISION_NAME[decision.precision]}"
    check = decision.check
    if check is not None:
        detail = f"checked: {check.summary()}"
    else:
        refused = [
            f"{precision.PRECISION_NAME[c.precision]} "
            + ("not faster" if c.accurate else "differs")
            + f": {c.summary()}"
            for c in decision.checks
        ]
        detail = "; ".join(refused) if refused else decision.note
    if decision.cached:
        detail += "; decision cached"
    return f"{text} ({detail})" if detail else text
