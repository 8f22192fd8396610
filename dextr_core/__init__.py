"""dextr_core: the DEXTR annotation engine, usable without Streamlit.

Four extreme clicks in, a mask out::

    import dextr_core
    segmenter = dextr_core.load_segmenter("models/dextr_pascal-sbd.h5")  # fallback if missing
    image = dextr_core.load_image("photo.jpg")                           # H x W x 3 uint8 RGB
    mask = segmenter.segment(image, [[x1, y1], [x2, y2], [x3, y3], [x4, y4]])  # bool (H, W)

The names below are imported from their modules here. Keras (and its backend) is imported only
when the DEXTR network is first built: :func:`build_dextr` lives in :mod:`dextr_core.network`,
the one module that imports Keras at its top, and is imported from there on first use.
"""

from .config import AnnoConfig, ConfigError, load_config
from .errors import DextrError
from .fallback import GrabCutSegmenter
from .images import ImageReadError, image_size, load_image, to_rgb_uint8
from .points import extreme_points
from .processing import make_input, paste_mask, paste_probability, validate_points
from .remote import ModelServiceError, RemoteSegmenter, load_remote_or_fallback
from .segmenters import DOWNLOAD_COMMAND, DextrSegmenter, Segmenter, load_segmenter
from .store import (
    ClaimError,
    ImageRecord,
    ObjectRecord,
    ProgressStore,
    Store,
    StoreCorruptError,
    open_store,
)
from .weights import WeightsError, load_dextr_weights

__all__ = [
    "DOWNLOAD_COMMAND",
    "AnnoConfig",
    "ClaimError",
    "ConfigError",
    "DextrError",
    "DextrSegmenter",
    "GrabCutSegmenter",
    "ImageReadError",
    "ImageRecord",
    "ModelServiceError",
    "ObjectRecord",
    "ProgressStore",
    "RemoteSegmenter",
    "Segmenter",
    "Store",
    "StoreCorruptError",
    "WeightsError",
    "build_dextr",
    "extreme_points",
    "image_size",
    "load_config",
    "load_dextr_weights",
    "load_image",
    "load_remote_or_fallback",
    "load_segmenter",
    "make_input",
    "open_store",
    "paste_mask",
    "paste_probability",
    "to_rgb_uint8",
    "validate_points",
]


def __getattr__(name):
    if name == "build_dextr":  # importing the network module imports Keras
        from .network import build_dextr

        return build_dextr
    raise AttributeError(f"module 'dextr_core' has no attribute {name!r}")
