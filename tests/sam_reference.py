"""The reference implementations the SAM tests compare against, importable on CPU-only machines.

* Meta's ``segment_anything`` (SamPredictor, sam_model_registry), and
* the MobileSAM project's ``mobile_sam`` package (``mobilesam-mirror`` on PyPI: its TinyViT).

Both import torchvision at package level (``segment_anything`` for two PIL helpers of its resize
and the automatic mask generator's NMS), and ``mobile_sam`` imports timm for layer helpers. A
CPU-only torch (``torch==2.13.0+cpu``, as requirements-dev installs) has no matching torchvision
on the package index (the published torchvision 0.28.0 is built against CUDA torch and fails on
``torchvision::nms``), so when ``import torchvision`` / ``import timm`` fail, :func:`install_stand_ins`
puts in minimal stand-ins for exactly the names these packages import:

* ``torchvision.transforms.functional.resize`` / ``to_pil_image``: for a PIL image torchvision's
  ``resize`` is ``image.resize((w, h), BILINEAR)`` and ``to_pil_image`` of an ``(H, W, 3)``
  uint8 array is ``Image.fromarray``; the stand-ins do the same;
* ``torchvision.ops.boxes`` (NMS for the automatic mask generator, never run here): raise;
* timm's ``DropPath`` / ``to_2tuple`` / ``trunc_normal_`` / ``register_model``: drop path is
  off in MobileSAM's encoder (rate 0 -> ``nn.Identity``), the others only initialise or register.

With a working torchvision / timm installed nothing is replaced. The networks' forward code is
the references' own.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

#: The repository root (the working folder of subprocesses the SAM tests start).
REPO = Path(__file__).resolve().parents[1]


def _importable(name: str) -> bool:
    try:
        __import__(name)
        return True
    except Exception:  # missing, or torchvision built for another torch
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        return False


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def _refuse(*args, **kwargs):
    raise NotImplementedError("stand-in for torchvision.ops: not used by the SAM tests")


def install_stand_ins() -> list[str]:
    """Install the stand-ins where the real package does not import; returns their names."""
    installed = []
    if not _importable("torchvision"):
        import numpy as np
        from PIL import Image

        def to_pil_image(array):
            return Image.fromarray(np.asarray(array))

        def resize(image, size):
            return image.resize((int(size[1]), int(size[0])), Image.BILINEAR)

        _module("torchvision")
        _module("torchvision.transforms")
        _module("torchvision.transforms.functional", resize=resize, to_pil_image=to_pil_image)
        _module("torchvision.ops")
        _module("torchvision.ops.boxes", batched_nms=_refuse, box_area=_refuse)
        installed.append("torchvision")
    if not _importable("timm"):
        import torch

        class DropPath(torch.nn.Module):
            def __init__(self, drop_prob=None):
                super().__init__()
                if drop_prob:
                    raise NotImplementedError("drop path is off in MobileSAM's encoder")

            def forward(self, x):
                return x

        def to_2tuple(value):
            return tuple(value) if isinstance(value, tuple | list) else (value, value)

        _module("timm")
        _module("timm.models")
        _module("timm.models.layers", DropPath=DropPath, to_2tuple=to_2tuple,
                trunc_normal_=torch.nn.init.trunc_normal_)
        _module("timm.models.registry", register_model=lambda fn: fn)
        installed.append("timm")
    return installed


def segment_anything():
    """Meta's ``segment_anything`` package (stand-ins installed first where needed)."""
    install_stand_ins()
    import segment_anything as package

    return package


def mobile_sam():
    """The MobileSAM project's ``mobile_sam`` package (stand-ins installed first where needed)."""
    install_stand_ins()
    import mobile_sam as package

    return package


def seeded_checkpoint(variant: str, path, seed: int = 0):
    """Build the reference model ``variant`` (``"vit_b"``: segment_anything's registry,
    ``"mobile_sam"``: MobileSAM's ``vit_t``) from ``seed``, save its state dict at ``path`` in
    the published layout (a plain ``torch.save`` of ``state_dict()``) and return the reference
    model with those weights, in eval mode.

    Tensors the reference initialises to a constant (batch-norm statistics, zero biases, relative
    position tables, attention biases, ...) get seeded noise, so every parameter takes part in
    the comparison; running variances are drawn from [0.5, 1.5).
    """
    import torch

    torch.manual_seed(seed)
    if variant == "mobile_sam":
        model = mobile_sam().sam_model_registry["vit_t"]()
    else:
        model = segment_anything().sam_model_registry[variant]()
    generator = torch.Generator().manual_seed(seed + 1)
    state = model.state_dict()
    with torch.no_grad():
        for name, tensor in state.items():
            if not tensor.dtype.is_floating_point:
                continue
            if "running_var" in name:
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.numel() > 1 and bool((tensor == tensor.flatten()[0]).all()):
                tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.05)
    torch.save(state, path)
    model.load_state_dict(state)
    return model.eval()  # eval() again: MobileSAM's attention caches its biases in eval()
