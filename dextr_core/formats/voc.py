"""The Pascal VOC segmentation layout.

::

    JPEGImages/<stem>.jpg                   the photos (JPEG; others re-encoded, quality 95)
    SegmentationObject/<stem>.png           palette PNG: 0 background, i = object i
    SegmentationClass/<stem>.png            palette PNG: 0 background, c = class c
    ImageSets/Segmentation/train.txt        the stems, one a line (no split is made)
    labels.txt                              class names by index, ``background`` first

Class indices follow the config's label order (label k -> k + 1); the palette is VOC's own
colour map. Palette PNGs hold 255 values at most: an image with more than 255 objects is left
out of the export with a warning.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from PIL import Image

from ..images import ImageReadError
from . import ClassIndex, ExportImage, PhotoFile, photo_content, unique_stems


def voc_colormap(count: int = 256) -> np.ndarray:
    """uint8 (count, 3): the PASCAL VOC palette (index bits spread over R, G, B)."""
    cmap = np.zeros((count, 3), np.uint8)
    for i in range(count):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


_PALETTE = voc_colormap().reshape(-1).tolist()


def palette_png(values: np.ndarray) -> bytes:
    """A mode-P PNG of uint8 (H, W) indices with the VOC palette."""
    img = Image.fromarray(np.ascontiguousarray(values, dtype=np.uint8))  # mode L
    img.putpalette(_PALETTE)  # makes it mode P, same indices
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def voc_entries(images: Iterable[ExportImage], image_ids: list[str], labels: Iterable[str],
                result: Any, *, link: bool = False
                ) -> Iterator[tuple[str, bytes | PhotoFile]]:
    """The export entries of a VOC dataset (``images`` in ``image_ids`` order); images, objects
    and warnings are added to ``result`` (:class:`~dextr_core.export.ExportResult`)."""
    classes = ClassIndex(labels, result.warnings)
    stems = unique_stems(image_ids)
    written: list[str] = []
    for image in images:
        if int(image.labels.max(initial=0)) > 255:
            result.warnings.append(
                f"{image.image_id}: {int(image.labels.max())} objects do not fit a VOC palette "
                "PNG (255 at most); left out of the export")
            continue
        try:
            _, content = photo_content(image.photo, link=link, jpeg=True)
        except ImageReadError as exc:
            result.warnings.append(f"{image.image_id}: left out of the export: {exc}")
            continue
        stem = stems[image.image_id]
        class_of = np.zeros(len(image.classes) + 1, np.uint8)
        for index, name in enumerate(image.classes, start=1):
            class_of[index] = classes(name) + 1
        objects = image.labels.astype(np.uint8)
        result.images += 1
        result.objects += len(np.setdiff1d(np.unique(objects), [0]))
        yield f"JPEGImages/{stem}.jpg", content
        yield f"SegmentationObject/{stem}.png", palette_png(objects)
        yield f"SegmentationClass/{stem}.png", palette_png(class_of[objects])
        written.append(stem)
    yield "ImageSets/Segmentation/train.txt", "".join(f"{s}\n" for s in written).encode()
    yield "labels.txt", "".join(f"{n}\n" for n in ["background", *classes.names]).encode("utf-8")
