"""SAM-family segmenters (SAM ViT-B/L/H, MobileSAM) behind the same four extreme clicks as DEXTR.

:class:`SamSegmenter` follows the :class:`dextr_core.segmenters.Segmenter` protocol, so the app,
``dextr-evaluate`` and the exports use it unchanged; :func:`dextr_core.segmenters.load_segmenter`
returns one when the weights file is a SAM checkpoint (recognised by its contents, see
:func:`read_checkpoint`). Its API mirrors Meta's ``SamPredictor``: :meth:`SamSegmenter.prepare`
(``set_image``) computes a photo's embedding, :meth:`SamSegmenter.segment` decodes a mask from it.

**Prompt** (:data:`PROMPTS`, ``optional.sam_prompt``): ``"box+points"`` (default) is the tight box
of the first four clicks plus every click as a positive point; ``"box"`` the box alone;
``"points"`` every click as a positive point. Clicks after the fourth are further positive points
(refinement) in ``box+points`` and ``points``. One mask comes out (``multimask_output=False``).
The mask is ``logit > 0``, the reference's threshold (DEXTR's ``optional.threshold`` does not
apply); :meth:`SamSegmenter.predict` returns ``sigmoid(logit)``.

**Pipeline**, step for step the reference's (``SamPredictor.set_image`` / ``predict``): the photo
is resized so its long side is 1024 (PIL bilinear), normalised with SAM's pixel mean and std,
padded to 1024 x 1024 and encoded to a ``(256, 64, 64)`` embedding; the prompt's coordinates are
scaled the same way; the prompt encoder and mask decoder give ``(256, 256)`` logits, which are
upscaled to 1024, cropped to the resized photo and upscaled to the photo's size (bilinear).

**Embedding cache**: the embeddings of the last :data:`DEFAULT_MAX_PHOTOS` photos are kept (keyed by
a hash of the pixels; 4 MB each), so a second object on a photo runs only the decoder.

**Runtime** (:func:`choose_runtime`): PyTorch on a GPU that torch sees; else OpenVINO on the CPU
when it is installed (the image encoder converted from the PyTorch module once, checked against
PyTorch and kept in :mod:`dextr_core.ir_cache`); else PyTorch on the CPU. The decoder always runs
in PyTorch (tens of milliseconds). ``DEXTR_SAM_RUNTIME`` overrides ``"auto"``. Reduced precision
(float16/bfloat16 encoder) only where :mod:`dextr_core.precision`'s check passes.

Needs ``pip install ".[sam]"`` (torch, segment-anything); imported only when a SAM file is loaded.
``segment_anything``'s package imports torchvision, which it needs only for its automatic mask
generator; where torchvision cannot be imported (a CPU-only torch without its matching
torchvision) :func:`sam_modeling` loads ``segment_anything.modeling`` without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import io
import logging
import os
import sys
import tempfile
import threading
import types
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import ir_cache
from . import precision as precision_check
from . import runtime as runtime_choice
from .processing import validate_points
from .weights import WeightsError

__all__ = [
    "DEFAULT_MAX_PHOTOS",
    "PROMPTS",
    "RUNTIMES",
    "PhotoEmbedding",
    "SamSegmenter",
    "choose_runtime",
    "describe_file",
    "read_checkpoint",
    "sam_prompt",
]

#: Values of ``optional.sam_prompt`` / ``SamSegmenter(prompt=...)``.
PROMPTS = ("box+points", "box", "points")
#: Runtimes a :class:`SamSegmenter` can run its image encoder with.
RUNTIMES = ("auto", "openvino", "torch")
#: Photos whose embeddings are kept (least recently used dropped first); 4 MB each.
DEFAULT_MAX_PHOTOS = 4
#: Side of SAM's square input.
IMAGE_SIZE = 1024
#: SAM's pixel normalisation (RGB, 0-255 scale).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
#: How the variants are named in :attr:`SamSegmenter.name`.
VARIANT_NAMES = {
    "vit_b": "SAM ViT-B",
    "vit_l": "SAM ViT-L",
    "vit_h": "SAM ViT-H",
    "mobile_sam": "MobileSAM",
}
#: Image-encoder width (``patch_embed.proj.weight``'s first dimension) -> ViT variant.
VIT_WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}
#: Largest difference of the OpenVINO encoder's embedding from PyTorch's that is accepted,
#: relative to the embedding's largest magnitude.
ENCODER_TOLERANCE = 1e-3
#: torch threads of the prompt decoder on a CPU (``DEXTR_SAM_DECODER_THREADS``): one, because
#: on a shared CPU a two-thread decoder measured ~10x slower than one thread (0.2 s vs 2 s per
#: object with the machine busy; docs/benchmarks-sam.md), and concurrent clicks each get a core.
DECODER_THREADS = max(1, int(os.environ.get("DEXTR_SAM_DECODER_THREADS", "1") or 1))
#: The files of one cached encoder IR in :mod:`dextr_core.ir_cache`.
IR_FILES = ("sam_encoder.xml", "sam_encoder.bin")
#: The command that fetches MobileSAM, the practical SAM on CPUs.
DOWNLOAD_COMMAND = "python -m dextr_core.download mobile-sam"
INSTALL_COMMAND = 'pip install ".[sam]"  (torch and segment-anything)'
PARTS = ("image_encoder.", "prompt_encoder.", "mask_decoder.")

logger = logging.getLogger(__name__)


def sam_prompt(value: str | None) -> str:
    """``value`` checked against :data:`PROMPTS` (None: the default ``"box+points"``)."""
    prompt = value or PROMPTS[0]
    if prompt not in PROMPTS:
        raise ValueError(f"sam_prompt must be one of {', '.join(PROMPTS)}, got {value!r}")
    return prompt


# --- the weights file -------------------------------------------------------------------------


def describe_file(path: str | os.PathLike) -> str:
    """What a weights file is, from its first bytes: ``"hdf5"``, ``"torch"`` (a PyTorch
    checkpoint: a zip with ``data.pkl`` or a legacy pickle), else a phrase for messages such as
    ``"an HTML page"``, ``"an empty file"``, ``"a ZIP archive (model.onnx, ...)"``."""
    p = Path(path)
    with open(p, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(p) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return "a damaged ZIP archive (a PyTorch checkpoint cut short?)"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        return f"a ZIP archive ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return "an HTML page (an error page saved instead of the weights?)"
    if head.startswith(b"\x08") or b"onnx" in head[:64]:
        return "probably an ONNX model (convert nothing: use the published .pth/.pt file)"
    try:
        first = head.decode("utf-8").strip().splitlines()[0][:40]
        return f"a text file starting with {first!r}"
    except (UnicodeDecodeError, IndexError):
        return f"a binary file starting with bytes {head[:8].hex(' ')}"


def _remedy() -> str:
    return (f"Use a published SAM file (sam_vit_b_01ec64.pth, mobile_sam.pt; get one with "
            f"`{DOWNLOAD_COMMAND}`) or a DEXTR .h5 file.")


def read_checkpoint(path: str | os.PathLike) -> tuple[str, dict]:
    """``(variant, state dict)`` of a published SAM checkpoint: ``variant`` is ``"vit_b"``,
    ``"vit_l"``, ``"vit_h"`` (by the image encoder's width) or ``"mobile_sam"`` (TinyViT keys).

    Loaded with ``torch.load(weights_only=True)`` (no code runs from the file). A state dict
    wrapped as ``{"model": ...}`` or ``{"state_dict": ...}`` is unwrapped. Raises
    :class:`dextr_core.weights.WeightsError` naming what was found for a file torch cannot read,
    or a PyTorch file that is not SAM's layout (``image_encoder.*``, ``prompt_encoder.*``,
    ``mask_decoder.*``).
    """
    p = Path(path)
    try:
        import torch
    except ImportError as exc:
        raise WeightsError(
            f"{p} is a PyTorch file (a SAM checkpoint?), but PyTorch is not installed. Install "
            f"the SAM extra: {INSTALL_COMMAND}."
        ) from exc
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"SAM checkpoint {p} cannot be read by PyTorch ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}); it is probably truncated or damaged (an "
            f"interrupted download?). {_remedy()}"
        ) from exc
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict) and len(state) <= 3:
            state = state[wrapper]
    if not isinstance(state, dict) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise WeightsError(
            f"{p} is a PyTorch file holding {type(state).__name__}, not a state dict of tensors; "
            f"it is neither a SAM checkpoint nor DEXTR weights. {_remedy()}"
        )
    keys = list(state)
    missing = [part.rstrip(".") for part in PARTS if not any(k.startswith(part) for k in keys)]
    if missing:
        prefixes = sorted({k.split(".")[0] for k in keys})
        raise WeightsError(
            f"{p} is a PyTorch state dict with {len(keys)} tensors (top-level names: "
            f"{', '.join(prefixes[:6]) or 'none'}), not a SAM checkpoint: it has no "
            f"{' / '.join(missing)} weights. {_remedy()}"
        )
    if "image_encoder.layers.0.blocks.0.conv1.c.weight" in state:
        return "mobile_sam", state
    width = state.get("image_encoder.patch_embed.proj.weight")
    variant = VIT_WIDTHS.get(int(width.shape[0])) if width is not None else None
    if variant is None:
        found = "no patch_embed.proj" if width is None else f"width {int(width.shape[0])}"
        raise WeightsError(
            f"{p} has SAM's parts but an image encoder this app does not know ({found}; known: "
            f"ViT-B 768, ViT-L 1024, ViT-H 1280, MobileSAM's TinyViT). {_remedy()}"
        )
    return variant, state


def sam_modeling() -> types.ModuleType:
    """``segment_anything.modeling`` (Sam, PromptEncoder, MaskDecoder, ...).

    Imported normally; where the package cannot be imported because torchvision is missing or
    does not match torch, the ``modeling`` subpackage (which needs only torch) is loaded on its
    own under the package name."""
    try:
        return importlib.import_module("segment_anything.modeling")
    except ModuleNotFoundError as exc:
        if exc.name and not exc.name.startswith("torchvision"):
            raise WeightsError(f"segment-anything is not installed: {INSTALL_COMMAND}") from exc
    except RuntimeError:  # torchvision built for another torch ("torchvision::nms")
        pass
    spec = importlib.util.find_spec("segment_anything")
    for key in [k for k in sys.modules if k.startswith(("segment_anything", "torchvision"))]:
        del sys.modules[key]
    package = types.ModuleType("segment_anything")
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin
    sys.modules["segment_anything"] = package
    return importlib.import_module("segment_anything.modeling")


#: The published builders' settings (``segment_anything.build_sam``), per ViT variant:
#: (width, depth, heads, global-attention blocks).
VIT_SETTINGS = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


def build_model(variant: str):
    """The empty ``segment_anything.modeling.Sam`` of ``variant`` in eval mode (MobileSAM: with
    :class:`dextr_core.tiny_vit.TinyViT` as image encoder); weights are loaded by the caller."""
    from functools import partial

    import torch

    modeling = sam_modeling()
    embedding = IMAGE_SIZE // 16
    if variant == "mobile_sam":
        from .tiny_vit import TinyViT

        encoder = TinyViT(IMAGE_SIZE)
    else:
        width, depth, heads, global_blocks = VIT_SETTINGS[variant]
        encoder = modeling.ImageEncoderViT(
            depth=depth, embed_dim=width, img_size=IMAGE_SIZE, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=heads, patch_size=16,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=global_blocks, window_size=14,
            out_chans=256,
        )
    model = modeling.Sam(
        image_encoder=encoder,
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=256, image_embedding_size=(embedding, embedding),
            input_image_size=(IMAGE_SIZE, IMAGE_SIZE), mask_in_chans=16,
        ),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(
                depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )
    return model.eval()


def load_model(path: str | os.PathLike):
    """``(variant, Sam module in eval mode)`` from a published checkpoint; a state dict whose
    names or shapes do not fit raises :class:`WeightsError` naming the first misfits."""
    variant, state = read_checkpoint(path)
    model = build_model(variant)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:400]
        raise WeightsError(
            f"{path} looks like a {VARIANT_NAMES[variant]} checkpoint but does not fit its "
            f"network ({detail}). {_remedy()}"
        ) from exc
    return variant, model


# --- runtime ----------------------------------------------------------------------------------


def sam_devices() -> list[runtime_choice.Device]:
    """What this process can run SAM on: torch's CUDA GPU (if any), torch's CPU, and OpenVINO's
    CPU plugin when ``openvino`` is installed."""
    devices = runtime_choice.probe_devices("torch")
    openvino = runtime_choice.openvino_device()
    return devices + ([openvino] if openvino is not None else [])


def choose_runtime(requested: str, devices: list[runtime_choice.Device]) -> runtime_choice.Choice:
    """The image encoder's runtime for ``requested`` (one of :data:`RUNTIMES`) given the visible
    ``devices``. Pure. ``"auto"``: torch on a GPU, else OpenVINO on the CPU, else torch on the
    CPU. ``ValueError`` for an unknown name or ``"openvino"`` without an OpenVINO device."""
    if requested not in RUNTIMES:
        raise ValueError(f"SAM runtime must be one of {', '.join(RUNTIMES)}, got {requested!r}")
    gpu = next((d for d in devices if d.framework == "torch" and d.kind == "gpu"), None)
    cpu = next((d for d in devices if d.framework == "torch" and d.kind == "cpu"), None)
    cpu = cpu or runtime_choice.Device("torch", "cpu", runtime_choice.cpu_name())
    openvino = next((d for d in devices if d.framework == "openvino"), None)
    if requested == "openvino":
        if openvino is None:
            raise ValueError("SAM runtime 'openvino' needs the openvino package (pip install "
                             "openvino); or set DEXTR_SAM_RUNTIME=auto")
        return runtime_choice.Choice("openvino", openvino, "asked for")
    if requested == "torch":
        return runtime_choice.Choice("torch", gpu or cpu, "asked for")
    if gpu is not None:
        return runtime_choice.Choice("torch", gpu, "PyTorch sees a GPU")
    if openvino is not None:
        return runtime_choice.Choice("openvino", openvino, "no GPU visible; OpenVINO is installed")
    return runtime_choice.Choice("torch", cpu, "no GPU visible and OpenVINO is not installed")


def _cache_key(weights_path: Path) -> str:
    """The IR cache key of the encoder: the weights' bytes, this module's and the TinyViT's code,
    and the torch / segment-anything / OpenVINO versions."""
    from importlib import metadata

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "none"

    here = Path(__file__).parent
    return ir_cache.key_for(
        weights_path,
        code=[here / "sam.py", here / "tiny_vit.py"],
        versions={p: version(p) for p in ("torch", "segment-anything", "openvino")},
    )


def _export_encoder(encoder, folder: Path) -> Path:
    """Convert the PyTorch image encoder to OpenVINO IR (float32 weights) in ``folder``."""
    import openvino as ov
    import torch

    example = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python control flow
        converted = ov.convert_model(encoder, example_input=example)
    xml = folder / IR_FILES[0]
    ov.save_model(converted, str(xml), compress_to_fp16=False)
    return xml


def _compile_encoder(xml: Path, precision: str = "f32"):
    """The OpenVINO CPU encoder: ``float32 (1, 3, 1024, 1024)`` numpy -> ``(1, 256, 64, 64)``."""
    import openvino as ov

    hint = {"f32": "f32", "bf16": "bf16", "f16": "f16"}[precision]
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": hint})
    if precision != "f32":
        effective = compiled.get_property("INFERENCE_PRECISION_HINT")
        effective = getattr(effective, "get_type_name", lambda: str(effective))()
        if effective != hint:
            raise ValueError(f"OpenVINO's CPU plugin would run {effective}, not {hint}")
    request = compiled.create_infer_request()
    return lambda x: np.asarray(request.infer({0: x})[0])


# --- the segmenter ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PhotoEmbedding:
    """One photo's encoder output. ``features``: torch ``(1, 256, 64, 64)`` float32 on the
    decoder's device; ``original_size``: the photo's ``(H, W)``; ``input_size``: ``(h, w)`` of the
    photo resized to a 1024 long side (the rest of the 1024 square is padding)."""

    features: object
    original_size: tuple[int, int]
    input_size: tuple[int, int]


def resized_shape(height: int, width: int, long_side: int = IMAGE_SIZE) -> tuple[int, int]:
    """``(h, w)`` of a ``height x width`` photo scaled so its long side is ``long_side``
    (rounded half up, as the reference's ``ResizeLongestSide``)."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def encoder_input(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """``(x, (h, w))``: ``x`` float32 ``(1, 3, 1024, 1024)``, the photo resized to a 1024 long
    side (PIL bilinear), normalised by :data:`PIXEL_MEAN` / :data:`PIXEL_STD` and zero-padded at
    the bottom and right; ``(h, w)`` the resized photo's size."""
    from PIL import Image

    height, width = image.shape[:2]
    h, w = resized_shape(height, width)
    resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR), np.float32)
    x = np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    normalised = (resized - np.float32(PIXEL_MEAN)) / np.float32(PIXEL_STD)
    x[0, :, :h, :w] = normalised.transpose(2, 0, 1)
    return x, (h, w)


def photo_key(image: np.ndarray) -> str:
    """Key of a photo in the embedding cache: a hash of its shape and pixels (~20 ms for 12 MP)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


class SamSegmenter:
    """A SAM checkpoint (ViT-B/L/H or MobileSAM) behind four extreme clicks (module docstring).

    ``weights_path``: a published checkpoint (``sam_vit_b_01ec64.pth``, ``mobile_sam.pt``, ...);
    a broken or foreign file raises :class:`dextr_core.weights.WeightsError`. ``prompt``: one of
    :data:`PROMPTS`. ``runtime``: one of :data:`RUNTIMES` (see :func:`choose_runtime`);
    ``precision``: ``"auto"`` / ``"f32"`` / ``"bf16"`` / ``"f16"`` as for DEXTR (applies to the
    image encoder). ``max_photos``: embeddings kept. ``warm_up``: run the encoder once now so the
    first photo does not pay for compilation.

    Attributes: ``name`` (``"MobileSAM (mobile_sam.pt)"``), ``variant``, ``runtime``,
    ``device``, ``precision``, ``runtime_info`` (one line for the sidebar), ``encoder_runs`` (how
    many times the image encoder ran). Thread-safe: one encoder run and one decoder run at a
    time (a click on one photo does not wait for another photo's encoder).
    """

    is_fallback = False
    is_remote = False

    def __init__(
        self,
        weights_path: str | os.PathLike,
        *,
        prompt: str = "box+points",
        runtime: str = "auto",
        precision: str = "auto",
        max_photos: int = DEFAULT_MAX_PHOTOS,
        warm_up: bool = True,
    ):
        self.weights_path = Path(weights_path)
        self.prompt = sam_prompt(prompt)
        if int(max_photos) < 1:
            raise ValueError(f"max_photos must be >= 1, got {max_photos!r}")
        self.max_photos = int(max_photos)
        requested_precision = precision_check.requested_precision(precision)
        if runtime == "auto":
            runtime = os.environ.get("DEXTR_SAM_RUNTIME", "auto") or "auto"
        if runtime not in RUNTIMES:  # fail now, not after the load
            raise ValueError(f"SAM runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        self.variant, self.model = load_model(self.weights_path)  # says if torch is missing
        import torch

        choice = choose_runtime(runtime, sam_devices())
        self.name = f"{VARIANT_NAMES[self.variant]} ({self.weights_path.name})"
        self.device = choice.device
        self.runtime = choice.runtime
        self._torch_device = torch.device("cuda" if self.device.kind == "gpu" else "cpu")
        self.model.to(self._torch_device)
        self._encoder_lock = threading.Lock()  # one encoder run at a time
        self._decoder_lock = threading.Lock()  # one decoder run at a time
        self._cache_lock = threading.Lock()  # the embedding cache
        self._embeddings: OrderedDict[str, PhotoEmbedding] = OrderedDict()
        self.encoder_runs = 0
        self._key = None
        self._encode = self._torch_encoder("f32")
        with tempfile.TemporaryDirectory(prefix="sam_openvino_") as scratch:
            xml = None
            if self.runtime == "openvino":
                xml = self._openvino_encoder(runtime == "auto", Path(scratch))
            decision, self._encode = self._choose_precision(requested_precision, xml)
        self.precision_decision, self.precision = decision, decision.precision
        self.runtime_info = runtime_choice.describe_runtime(self.runtime, self.device,
                                                            self.precision_decision)
        self.runtime_info += "; prompt decoder in PyTorch; embeddings of " \
            f"{self.max_photos} photos kept"
        logger.info("%s runs on %s (%s)", self.name, self.runtime_info, choice.reason)
        if warm_up:
            self._encode(np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32))

    def __repr__(self) -> str:
        return f"SamSegmenter({str(self.weights_path)!r}, prompt={self.prompt!r})"

    # -- encoder runtimes

    def _torch_encoder(self, precision: str):
        import torch

        encoder, device = self.model.image_encoder, self._torch_device
        dtype = {"bf16": torch.bfloat16, "f16": torch.float16}.get(precision)

        def encode(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                batch = torch.from_numpy(x).to(device)
                if dtype is None:
                    return encoder(batch).float().cpu().numpy()
                with torch.autocast(device.type, dtype=dtype):
                    return encoder(batch).float().cpu().numpy()

        return encode

    def _openvino_encoder(self, automatic: bool, folder: Path) -> Path | None:
        """Switch ``self._encode`` to OpenVINO: the cached IR of these weights, else a fresh
        conversion in ``folder`` checked against PyTorch (kept in the cache if it passes).
        Returns the IR's xml (in the cache, else in ``folder``), None if PyTorch stays."""
        if ir_cache.cache_dir() is not None:
            self._key = _cache_key(self.weights_path)
            xml = ir_cache.lookup(self._key, IR_FILES)
            if xml is not None:
                try:
                    self._encode = _compile_encoder(xml)
                    return xml
                except Exception as exc:  # a damaged entry: convert again
                    warnings.warn(f"Ignoring the cached OpenVINO encoder {xml.parent} ({exc})",
                                  RuntimeWarning, stacklevel=3)
                    ir_cache.discard(self._key)
        try:
            xml = _export_encoder(self.model.image_encoder, folder)
            encode = _compile_encoder(xml)
            x = np.random.default_rng(0).normal(0, 1, (1, 3, IMAGE_SIZE, IMAGE_SIZE))
            x = x.astype(np.float32)
            want, got = self._encode(x), encode(x)
            difference = float(np.abs(want - got).max() / max(1.0, np.abs(want).max()))
            if difference > ENCODER_TOLERANCE:
                raise ValueError(f"its embedding differs from PyTorch's by {difference:.2g} "
                                 f"(relative; more than {ENCODER_TOLERANCE:g})")
            self._encode = encode
            if self._key is not None:
                entry = ir_cache.store(self._key, folder, IR_FILES)
                if entry is not None:
                    return entry / IR_FILES[0]
            return xml
        except Exception as exc:
            if not automatic:
                raise
            warnings.warn(f"OpenVINO cannot run the SAM encoder ({exc}); running it with "
                          "PyTorch instead", RuntimeWarning, stacklevel=3)
            self.runtime = "torch"
            self.device = choose_runtime("torch", sam_devices()).device
            return None

    def _choose_precision(self, requested: str, xml: Path | None):
        """``(Decision, encode)``: the precision the encoder runs in (:mod:`dextr_core.precision`);
        the check compares whole masks (encoder in the candidate precision, decoder float32) on
        the shipped sample photos."""
        def make_candidate(precision: str):
            if xml is not None:
                return _compile_encoder(xml, precision)
            return self._torch_encoder(precision)

        if requested == "f32":
            return precision_check.Decision("f32", note="asked for"), self._encode
        if requested != "auto":
            return (precision_check.Decision(requested, note="asked for, not checked"),
                    make_candidate(requested))
        offered = self.device.precisions
        if offered and self._key is None and ir_cache.cache_dir() is not None:
            self._key = _cache_key(self.weights_path)
        facts = {"model": "sam", "runtime": self.runtime, "device": self.device.label,
                 "prompt": self.prompt, "offered": list(offered)}
        tag = ir_cache.decision_tag(**facts)
        key = self._key

        def as_mask_forward(encode):
            def forward(batch: np.ndarray) -> np.ndarray:  # (1, 1024, 1024, 3) -> probabilities
                x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
                embedding = PhotoEmbedding(self._features(encode(x)), (IMAGE_SIZE, IMAGE_SIZE),
                                           (IMAGE_SIZE, IMAGE_SIZE))
                points = precision_check.check_points(IMAGE_SIZE, IMAGE_SIZE)[0]
                logits = self._decode(embedding, points.astype(np.float64))
                return 1.0 / (1.0 + np.exp(-logits))
            return forward

        def inputs():
            from PIL import Image

            photos = []
            for path in sorted(precision_check.SAMPLES.glob("*.jpg")):
                with Image.open(path) as photo:
                    x, _ = encoder_input(np.asarray(photo.convert("RGB")))
                photos.append(x[0].transpose(1, 2, 0))
            return photos

        built = {"f32": self._encode}

        def candidate(precision: str):
            built[precision] = make_candidate(precision)
            return as_mask_forward(built[precision])

        decision, _ = precision_check.choose_precision(
            offered, as_mask_forward(self._encode), candidate, threshold=0.5, inputs=inputs,
            load=lambda: ir_cache.lookup_decision(key, tag) if key else None,
            save=lambda data: key and ir_cache.store_decision(key, tag, data, facts),
        )
        return decision, built[decision.precision]

    # -- embeddings

    def _features(self, array: np.ndarray):
        import torch

        return torch.from_numpy(np.ascontiguousarray(array, np.float32)).to(self._torch_device)

    def prepare(self, image) -> PhotoEmbedding:
        """The embedding of ``image`` (``(H, W, 3)`` uint8 RGB, or anything
        :func:`dextr_core.images.to_rgb_uint8` takes): from the cache, else the image encoder
        runs now (seconds on a CPU) and the result is kept. The app calls this when a photo
        opens, so the first object costs only the decoder. Thread-safe (a photo being encoded
        by another thread is waited for, not encoded twice)."""
        from .images import to_rgb_uint8

        image = to_rgb_uint8(np.asarray(image))
        key = photo_key(image)
        found = self._kept(key)
        if found is not None:
            return found
        with self._encoder_lock:
            found = self._kept(key)  # encoded by another thread while this one waited
            if found is not None:
                return found
            x, input_size = encoder_input(image)
            embedding = PhotoEmbedding(self._features(self._encode(x)),
                                       tuple(image.shape[:2]), input_size)
            self.encoder_runs += 1
        with self._cache_lock:
            self._embeddings[key] = embedding
            while len(self._embeddings) > self.max_photos:
                self._embeddings.popitem(last=False)
        return embedding

    def _kept(self, key: str) -> PhotoEmbedding | None:
        with self._cache_lock:
            found = self._embeddings.get(key)
            if found is not None:
                self._embeddings.move_to_end(key)
            return found

    set_image = prepare

    def forget_photos(self) -> None:
        """Drop every kept embedding."""
        with self._cache_lock:
            self._embeddings.clear()

    # -- decoder

    def prompt_arrays(self, points: np.ndarray):
        """``(coords (N, 2) | None, labels (N,) | None, box (4,) | None)`` of the prompt for
        validated ``points`` (full-image pixels) under ``self.prompt``."""
        first = points[:4]
        box = np.array([*first.min(axis=0), *first.max(axis=0)], dtype=np.float64)
        labels = np.ones(len(points), dtype=np.int64)
        if self.prompt == "box":
            return None, None, box
        if self.prompt == "points":
            return points, labels, None
        return points, labels, box

    def _decode(self, embedding: PhotoEmbedding, points: np.ndarray) -> np.ndarray:
        """Mask logits ``float32 (H, W)`` at the photo's size for validated ``points``."""
        import torch
        import torch.nn.functional as F

        coords, labels, box = self.prompt_arrays(points)
        height, width = embedding.original_size
        h, w = embedding.input_size
        scale = np.array([w / width, h / height])
        device = self._torch_device
        with torch.inference_mode():
            point_prompt = None
            if coords is not None:
                scaled = torch.as_tensor(coords * scale, dtype=torch.float, device=device)[None]
                point_prompt = (scaled, torch.as_tensor(labels, dtype=torch.int, device=device)[None])
            box_prompt = None
            if box is not None:
                box_prompt = torch.as_tensor(box * np.tile(scale, 2), dtype=torch.float,
                                             device=device)[None]
            sparse, dense = self.model.prompt_encoder(
                points=point_prompt, boxes=box_prompt, masks=None)
            low_res, _ = self.model.mask_decoder(
                image_embeddings=embedding.features,
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
            logits = F.interpolate(low_res, (IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                                   align_corners=False)[..., :h, :w]
            logits = F.interpolate(logits, (height, width), mode="bilinear", align_corners=False)
            return logits[0, 0].float().cpu().numpy()

    def logits(self, image, points) -> np.ndarray:
        """SAM's mask logits ``float32 (H, W)`` for the object clicked at ``points`` (``(N, 2)``
        ``(x, y)`` full-image pixels, N >= 4; see the module docstring for the prompt). Raises
        ``ValueError`` for invalid points (:func:`dextr_core.processing.validate_points`)."""
        points = validate_points(points, np.shape(image))
        embedding = self.prepare(image)
        with self._decoder_lock, self._decoder_threads():
            return self._decode(embedding, points)

    @contextlib.contextmanager
    def _decoder_threads(self):
        """Run the CPU decoder on :data:`DECODER_THREADS` torch threads (restored after)."""
        import torch

        if self._torch_device.type != "cpu":
            yield
            return
        previous = torch.get_num_threads()
        torch.set_num_threads(DECODER_THREADS)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def predict(self, image, points) -> np.ndarray:
        """Foreground probability ``float32 (H, W)`` in [0, 1]: ``sigmoid(logits)``."""
        return (1.0 / (1.0 + np.exp(-self.logits(image, points)))).astype(np.float32)

    def segment(self, image, points) -> np.ndarray:
        """Object mask ``bool (H, W)``: ``logits > 0`` (the reference's threshold)."""
        return self.logits(image, points) > 0.0
