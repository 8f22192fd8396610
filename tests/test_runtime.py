"""The runtime choice over made-up device lists (dextr_core.runtime.choose is pure), what a device
offers, and the one-line description the sidebar and the log show."""

from __future__ import annotations

import pytest

from dextr_core.runtime import (
    Choice,
    Device,
    choose,
    gpu_precisions,
    openvino_cpu_precisions,
    resolve,
)

TF_GPU = Device("tensorflow", "gpu", "NVIDIA H100", ("f16", "bf16"))
TF_CPU = Device("tensorflow", "cpu", "Xeon")
JAX_GPU = Device("jax", "gpu", "NVIDIA H200", ("f16", "bf16"))
JAX_CPU = Device("jax", "cpu", "Xeon")
TORCH_GPU = Device("torch", "gpu", "NVIDIA A100", ("f16", "bf16"))
TORCH_CPU = Device("torch", "cpu", "Xeon")
OPENVINO = Device("openvino", "cpu", "Xeon", ("bf16",))


@pytest.mark.parametrize(
    "backend,devices,runtime,device",
    [
        # the team server with a GPU: TensorFlow's GPU wins over OpenVINO (the bug)
        ("tensorflow", [TF_GPU, TF_CPU, OPENVINO], "graph", TF_GPU),
        ("tensorflow", [TF_CPU, OPENVINO], "openvino", OPENVINO),
        ("tensorflow", [TF_CPU], "graph", TF_CPU),
        ("jax", [JAX_GPU, JAX_CPU], "predict", JAX_GPU),
        ("torch", [TORCH_GPU, TORCH_CPU], "predict", TORCH_GPU),
        ("jax", [JAX_CPU], "predict", JAX_CPU),
        # a GPU that another framework sees is not one this process runs on
        ("jax", [TORCH_GPU, JAX_CPU], "predict", JAX_CPU),
        ("tensorflow", [JAX_GPU, TF_CPU, OPENVINO], "openvino", OPENVINO),
    ],
)
def test_auto_takes_a_visible_gpu_first_then_openvino_then_the_graph(
    backend, devices, runtime, device
):
    choice = choose("auto", backend, devices)
    assert isinstance(choice, Choice)
    assert (choice.runtime, choice.device) == (runtime, device)
    assert choice.reason


def test_a_named_runtime_runs_on_the_backends_own_device():
    assert choose("graph", "tensorflow", [TF_GPU, TF_CPU, OPENVINO]).device == TF_GPU
    assert choose("graph", "tensorflow", [TF_CPU, OPENVINO]).device == TF_CPU
    assert choose("openvino", "tensorflow", [TF_GPU, TF_CPU, OPENVINO]).device == OPENVINO
    assert choose("eager", "tensorflow", [TF_CPU]).runtime == "eager"
    # no CPU entry at all (a list made by hand): a CPU of that backend is assumed
    assert choose("predict", "jax", []).device.kind == "cpu"


def test_runtimes_that_need_tensorflow_or_openvino_say_so():
    with pytest.raises(ValueError, match="needs the TensorFlow Keras backend, not jax"):
        choose("graph", "jax", [JAX_GPU])
    with pytest.raises(ValueError, match="pip install openvino"):
        choose("openvino", "tensorflow", [TF_CPU])
    with pytest.raises(ValueError, match="runtime must be one of"):
        choose("tensorrt", "tensorflow", [TF_CPU])


def test_bfloat16_is_offered_on_cpus_with_amx_only():
    assert openvino_cpu_precisions(["FP32", "BF16", "INT8"], {"avx512f", "amx_bf16"}) == ("bf16",)
    # AVX512-BF16 without AMX runs this network slower than float32: not offered
    assert openvino_cpu_precisions(["FP32", "BF16"], {"avx512f", "avx512_bf16"}) == ()
    assert openvino_cpu_precisions(["FP32", "INT8"], {"avx2"}) == ()


def test_gpu_precisions_follow_the_compute_capability():
    assert gpu_precisions((9, 0)) == ("f16", "bf16")
    assert gpu_precisions((7, 5)) == ("f16",)
    assert gpu_precisions((6, 1)) == ()
    assert gpu_precisions(None) == ("f16", "bf16")  # unknown: the check decides


def test_dextr_runtime_overrides_auto_and_bad_names_are_refused(monkeypatch):
    monkeypatch.setenv("DEXTR_RUNTIME", "graph")
    assert resolve("auto", [TF_GPU, TF_CPU, OPENVINO]).runtime == "graph"
    monkeypatch.setenv("DEXTR_RUNTIME", "fastest")
    with pytest.raises(ValueError, match="runtime must be one of"):
        resolve("auto", [TF_CPU])


def test_the_description_names_runtime_device_and_precision():
    from dextr_core.precision import Decision, PrecisionCheck
    from dextr_core.runtime import describe_runtime

    plain = describe_runtime(
        "openvino", Device("openvino", "cpu", "AMD EPYC"), Decision("f32", note="no faster one")
    )
    assert plain == "OpenVINO on CPU (AMD EPYC), float32 (no faster one)"
    check = PrecisionCheck("bf16", 12, 0.998, 0.004, 1.07, 0.18, accurate=True, kept=True)
    kept = describe_runtime("openvino", OPENVINO, Decision("bf16", (check,), cached=True))
    assert kept.startswith("OpenVINO on CPU (Xeon), bfloat16 (checked: min IoU 0.998")
    assert "0.18 s vs 1.07 s per forward" in kept and kept.endswith("decision cached)")
    refused = PrecisionCheck("f16", 12, 0.96, 0.3, 0.02, 0.01, accurate=False, kept=False)
    gpu = describe_runtime("predict", JAX_GPU, Decision("f32", (refused,)))
    assert gpu.startswith("Keras JAX on GPU (NVIDIA H200), float32 (float16 differs: min IoU 0.960")
