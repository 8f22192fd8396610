"""The Ultralytics YOLO segmentation layout.

::

    images/<stem>.<ext>     the photos (copies, or links with --link), upright
    labels/<stem>.txt       one line per object: class index, then x y pairs of its outline,
                            normalised to 0..1 by the image's width and height
    data.yaml               path (the export folder; left out in a zip, so the folder the yaml
                            is in is used), train and val (both images: no split is made),
                            names (index -> class, the config's label order)

Stems come from :func:`~dextr_core.formats.unique_stems` (sub-folders flattened, photos sharing
a stem kept apart). A YOLO line holds one polygon: an object of several parts is one polygon
joined by zero-width bridges (:func:`~dextr_core.formats.polygons.joined_polygon`); holes cannot
be written and are filled (counted in the summary).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from ..images import ImageReadError
from . import ClassIndex, ExportImage, PhotoFile, photo_content, unique_stems
from .polygons import DEFAULT_TOLERANCE, joined_polygon, mask_polygons


def label_lines(image: ExportImage, classes: ClassIndex,
                tolerance: float = DEFAULT_TOLERANCE) -> tuple[list[str], int]:
    """``(lines, objects with holes filled)``: the labels file of one image, one line per
    non-empty object (``"<class> x1 y1 x2 y2 ..."``, 6 decimals)."""
    height, width = image.labels.shape
    lines, filled = [], 0
    for index, name in enumerate(image.classes, start=1):
        outline = mask_polygons(image.labels == index, tolerance)
        if not outline.polygons:
            continue
        filled += bool(outline.holes)
        ring = joined_polygon(outline.polygons)
        ring = ring / [width, height]
        ring = ring.clip(0.0, 1.0)
        coords = " ".join(f"{v:.6f}" for v in ring.ravel())
        lines.append(f"{classes(name)} {coords}")
    return lines, filled


def yolo_entries(images: Iterable[ExportImage], image_ids: list[str], labels: Iterable[str],
                 result: Any, *, link: bool = False, root: Path | None = None,
                 tolerance: float = DEFAULT_TOLERANCE
                 ) -> Iterator[tuple[str, bytes | PhotoFile]]:
    """The export entries of a YOLO dataset.

    ``images``: the selected images in ``image_ids`` order (ids of all of them, for the stems);
    ``labels``: the config's labels; ``result``: the export's
    :class:`~dextr_core.export.ExportResult` (images, objects, warnings and
    ``counts["with holes filled"]`` are added to it); ``root``: the export folder written into
    data.yaml (None for a zip).
    """
    classes = ClassIndex(labels, result.warnings)
    stems = unique_stems(image_ids)
    for image in images:
        stem = stems[image.image_id]
        try:
            ext, content = photo_content(image.photo, link=link)
        except ImageReadError as exc:
            result.warnings.append(f"{image.image_id}: left out of the export: {exc}")
            continue
        lines, filled = label_lines(image, classes, tolerance)
        result.counts["with holes filled"] = result.counts.get("with holes filled", 0) + filled
        result.images += 1
        result.objects += len(lines)
        yield f"images/{stem}{ext}", content
        yield f"labels/{stem}.txt", "".join(f"{line}\n" for line in lines).encode("utf-8")
    data: dict = {"path": str(root)} if root is not None else {}
    data.update({"train": "images", "val": "images",
                 "names": dict(enumerate(classes.names))})
    text = ("# Written by python -m dextr_core.export --format yolo (Ultralytics segmentation).\n"
            "# val = train: the export makes no split.\n")
    yield "data.yaml", (text + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
                        ).encode("utf-8")
