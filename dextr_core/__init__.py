"""dextr_core: the DEXTR annotation engine, usable without Streamlit.

Four extreme clicks in, a mask out::

    import dextr_core
    segmenter = dextr_core.load_segmenter("models/dextr_pascal-sbd.h5")  # fallback if missing
    image = dextr_core.load_image("photo.jpg")                           # H x W x 3 uint8 RGB
    mask = segmenter.segment(image, [[x1, y1], [x2, y2], [x3, y3], [x4, y4]])  # bool (H, W)

Names are imported lazily so that ``import dextr_core`` stays cheap: Keras (and its backend) is
only imported when the DEXTR network is first built.
"""

from importlib import import_module

_EXPORTS = {
    "DextrError": "errors",
    "ImageReadError": "images",
    "load_image": "images",
    "to_rgb_uint8": "images",
    "image_size": "images",
    "make_input": "processing",
    "paste_mask": "processing",
    "paste_probability": "processing",
    "validate_points": "processing",
    "extreme_points": "points",
    "build_dextr": "network",
    "load_dextr_weights": "weights",
    "WeightsError": "weights",
    "Segmenter": "segmenters",
    "DextrSegmenter": "segmenters",
    "load_segmenter": "segmenters",
    "DOWNLOAD_COMMAND": "segmenters",
    "GrabCutSegmenter": "fallback",
    "RemoteSegmenter": "remote",
    "ModelServiceError": "remote",
    "load_remote_or_fallback": "remote",
    "AnnoConfig": "config",
    "ConfigError": "config",
    "load_config": "config",
    "ProgressStore": "store",
    "ImageRecord": "store",
    "ObjectRecord": "store",
    "ClaimError": "store",
    "StoreCorruptError": "store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dextr_core' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
