"""Export formats beyond the COCO RLE / label-map / palette exports of :mod:`dextr_core.export`.

Each format turns the selected images into export entries ``(name, content)``: ``name`` is a
POSIX path inside the export (folder or zip) and ``content`` is ``bytes`` or a :class:`PhotoFile`
(a photo copied, or linked with ``--link``, from the source folder). :mod:`dextr_core.export`
keeps the guards, the status choice and the atomic folder / zip writing, and calls these.

* :mod:`.polygons` - mask -> outline polygons (OpenCV contours, tolerance in pixels, holes found)
* :mod:`.coco` - a COCO ``segmentation`` as polygons, RLE kept for objects with holes
* :mod:`.yolo` - the Ultralytics segmentation layout (images/, labels/, data.yaml)
* :mod:`.voc` - the Pascal VOC segmentation layout (JPEGImages/, SegmentationObject/, ...)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

__all__ = ["ClassIndex", "ExportImage", "PhotoFile", "unique_stems"]


@dataclass(frozen=True)
class PhotoFile:
    """Export content taken from a file: ``path`` copied into the export (or, with ``link`` and a
    folder export, a symbolic link to it)."""

    path: Path
    link: bool = False


@dataclass(frozen=True)
class ExportImage:
    """One selected image as the formats see it.

    ``image_id``: the store's id (POSIX path relative to the source); ``photo``: its file;
    ``labels``: the label map, uint8/uint16 (H, W), 0 = background, i = object i;
    ``classes``: the class name of object i at position i - 1 (len = labels.max()).
    """

    image_id: str
    photo: Path
    labels: np.ndarray
    classes: tuple[str, ...]


class ClassIndex:
    """Class indices (0-based) in the config's label order; a label not in the config is appended
    after them, with one warning (the same rule as the COCO export's categories)."""

    def __init__(self, labels: Iterable[str], warnings: list[str]):
        self.names: list[str] = list(labels)
        self._index = {name: i for i, name in enumerate(self.names)}
        self._warnings = warnings

    def __call__(self, label: str) -> int:
        """The 0-based index of ``label``."""
        if label not in self._index:
            self._index[label] = len(self.names)
            self.names.append(label)
            self._warnings.append(f"label {label!r} is not in optional.labels; added as class "
                                  f"{self._index[label]}")
        return self._index[label]


def unique_stems(image_ids: Iterable[str]) -> dict[str, str]:
    """A flat file stem for each image id, unique among them (formats with flat folders).

    ``a/b/x.jpg`` -> ``a__b__x``; when two ids give the same stem (``x.jpg`` and ``x.png``, or
    ``a__x.jpg`` and ``a/x.jpg``), the later one in sorted order gets its extension and, if still
    taken, a number: ``x_png``, ``x_png_2``. The same ids always give the same stems.
    """
    taken: set[str] = set()
    out: dict[str, str] = {}
    for image_id in sorted(set(image_ids)):
        rel = PurePosixPath(image_id)
        stem = "__".join([*rel.parent.parts, rel.stem]) if rel.parent.parts else rel.stem
        candidate = stem
        if candidate in taken:
            candidate = f"{stem}_{rel.suffix.lstrip('.').lower() or 'img'}"
        n = 2
        base = candidate
        while candidate in taken:
            candidate = f"{base}_{n}"
            n += 1
        taken.add(candidate)
        out[image_id] = candidate
    return out


def photo_content(path: Path, *, link: bool = False, jpeg: bool = False
                  ) -> tuple[str, PhotoFile | bytes]:
    """``(extension, content)`` of one photo for an export: the file itself (copied, or linked
    with ``link``) when it is already upright and, with ``jpeg``, a JPEG; otherwise its upright
    pixels (EXIF orientation applied, as the masks are) encoded again: JPEG quality 95 with
    ``jpeg``, else PNG. Raises :class:`~dextr_core.images.ImageReadError` for an unreadable photo.
    """
    import io

    from PIL import Image

    from ..images import ImageReadError, load_image

    suffix = path.suffix.lower()
    is_jpeg = suffix in (".jpg", ".jpeg")
    try:
        with Image.open(path) as img:
            orientation = img.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"cannot read {path} ({exc}); check the photo") from exc
    if orientation in (None, 1) and (is_jpeg or not jpeg):
        return (".jpg" if jpeg else suffix), PhotoFile(path, link)
    buffer = io.BytesIO()
    Image.fromarray(load_image(path)).save(buffer, format="JPEG" if jpeg else "PNG",
                                           **({"quality": 95} if jpeg else {}))
    return (".jpg" if jpeg else ".png"), buffer.getvalue()
