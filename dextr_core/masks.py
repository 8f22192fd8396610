"""Mask files: where they go, how they are written (atomically) and read, and label maps.

A label map is a ``uint8 (H, W)`` array (``uint16`` when an image has more than 255 objects):
0 is background and value ``i`` is the i-th accepted object (1-based). It is stored per image as a
PNG (mode ``L`` for uint8, 16-bit grayscale for uint16) or as a ``.npy`` file, the same layout as
DEXTR-AnnoTool's masks.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from .errors import DextrError
from .fileio import atomic_write  # noqa: F401  (re-exported: the one atomic-write helper)
from .images import max_pixels

#: The formats a label map can be saved in (``optional.save_format``).
SAVE_FORMATS = ("png", "npy")

#: Folder (inside the destination) holding the unfinished objects of images in progress.
DRAFTS_DIR = ".drafts"

#: Most objects one label map can hold (uint16).
MAX_OBJECTS = 65535


class MaskFileError(DextrError):
    """A mask file that cannot be read as a label map; the message names the file and the fix."""


def _checked_image_id(image_id: str) -> PurePosixPath:
    """The image id as a relative POSIX path; refuses absolute ids and ids that climb out (``..``)."""
    rel = PurePosixPath(str(image_id).replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.name or rel.name in (".", ".."):
        raise ValueError(
            f"image id {image_id!r} must be a path relative to the source folder, "
            "without '..' (e.g. 'sub/dir/img.jpg')"
        )
    return rel


def mask_path(
    destination: str | os.PathLike, image_id: str, suffix: str, save_format: str,
    clashing: Collection[str] = (),
) -> Path:
    """Where the label map of one image is saved.

    ``image_id`` is the image's POSIX path relative to the source folder; its sub-folders are
    mirrored under ``destination`` and its extension replaced: ``a/b/img.jpg`` with suffix
    ``"_mask"`` and format ``"png"`` -> ``<destination>/a/b/img_mask.png`` (DEXTR-AnnoTool's name).
    An id in ``clashing`` (see :func:`clashing_ids`: another photo of its folder has the same
    name stem, so the stem alone would give both one file) keeps its whole file name instead:
    ``a/b/img.jpg`` -> ``<destination>/a/b/img.jpg_mask.png``.
    Raises ``ValueError`` for an unknown format or an id that is absolute or contains ``..``.
    """
    if save_format not in SAVE_FORMATS:
        raise ValueError(f"save_format must be one of {SAVE_FORMATS}, got {save_format!r}")
    rel = _checked_image_id(image_id)
    base = rel.name if str(image_id) in clashing else PurePosixPath(rel.name).stem
    return Path(destination).joinpath(*rel.parent.parts, f"{base}{suffix}.{save_format}")


def clashing_ids(image_ids: Iterable[str], near: str | None = None) -> frozenset[str]:
    """The ids whose mask file keeps the photo's whole name (see :func:`mask_path`).

    ``image_ids``: every image id of the store (missing photos included, so that a name never
    changes when a photo is moved away). An id clashes when another photo in the same folder has
    the same name stem (``a.jpg`` and ``a.png``: both would be ``a<suffix>.png``) or a stem equal
    to the whole name another clashing photo's file uses (``a.jpg`` clashing with ``a.png``, and
    ``a.jpg.png``). Names are compared case-insensitively, as on
    macOS and Windows disks. Every other id keeps DEXTR-AnnoTool's ``<stem><suffix>`` name.
    ``near``: one image id whose answer alone is needed; only the ids that can decide it (its
    folder's names beginning like its name, up to the first dot) are looked at, which is fast.
    """
    if near is not None:
        folder, _, name = str(near).rpartition("/")
        root = f"{folder}/{name.split('.', 1)[0]}" if folder else name.split(".", 1)[0]
        root = root.casefold()
        image_ids = [i for i in image_ids if i.casefold().startswith(root)]
    by_stem: dict[str, list[str]] = {}
    for image_id in image_ids:  # key: "<folder>/<stem>" in lower case (splitext: a str op)
        by_stem.setdefault(os.path.splitext(str(image_id))[0].casefold(), []).append(image_id)
    out = {i for ids in by_stem.values() if len(ids) > 1 for i in ids}
    todo = list(out)
    while todo:  # a whole name now in use may equal another photo's stem: that one keeps its name
        for other in by_stem.get(todo.pop().casefold(), ()):
            if other not in out:
                out.add(other)
                todo.append(other)
    return frozenset(out)


def draft_path(destination: str | os.PathLike, image_id: str) -> Path:
    """Where the label map of an unfinished image is kept: ``<destination>/.drafts/<id>.png``.

    ``a/b/img.jpg`` -> ``<destination>/.drafts/a/b/img.jpg.png`` (the full id is kept, so two images
    differing only by extension do not share a draft).
    """
    rel = _checked_image_id(image_id)
    return Path(destination, DRAFTS_DIR).joinpath(*rel.parent.parts, f"{rel.name}.png")


def label_map(masks: Sequence[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Combine per-object boolean masks into one label map.

    ``masks``: bool (H, W) arrays in acceptance order; ``shape``: (H, W) (extra trailing dims such
    as a channel count are ignored). Returns uint8 (H, W), or uint16 with more than 255 masks;
    0 = background, i = ``masks[i - 1]``. Where masks overlap the later one wins.
    Raises ``ValueError`` if a mask's shape differs from ``shape`` or there are more than 65535.
    """
    height, width = int(shape[0]), int(shape[1])
    if len(masks) > MAX_OBJECTS:
        raise ValueError(f"at most {MAX_OBJECTS} objects fit in a label map, got {len(masks)}")
    dtype = np.uint8 if len(masks) <= 255 else np.uint16
    out = np.zeros((height, width), dtype=dtype)
    for index, mask in enumerate(masks, start=1):
        m = np.asarray(mask)
        if m.shape != (height, width):
            raise ValueError(
                f"mask {index} has shape {m.shape}, expected {(height, width)} (the image's H, W)"
            )
        out[m.astype(bool, copy=False)] = index
    return out


#: PNG text key naming the objects of a label map, in label order (see :func:`save_label_map`).
OBJECTS_KEY = "dextr-objects"


def _encode_png(labels: np.ndarray, object_ids: Sequence[str] | None = None) -> bytes:
    buffer = io.BytesIO()
    info = None
    if object_ids is not None:
        info = PngInfo()
        info.add_text(OBJECTS_KEY, ",".join(str(i) for i in object_ids))
    # Pillow picks mode L for uint8 and I;16 (16-bit grayscale PNG) for uint16 arrays.
    Image.fromarray(np.ascontiguousarray(labels)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _encode_npy(labels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, labels, allow_pickle=False)
    return buffer.getvalue()


def encode_label_map(labels: np.ndarray, save_format: str,
                     object_ids: Sequence[str] | None = None) -> bytes:
    """The bytes of a label map file in ``save_format`` ("png" or "npy"); see :func:`save_label_map`."""
    labels = _checked_label_map(labels)
    if save_format == "png":
        return _encode_png(labels, object_ids)
    if save_format == "npy":
        return _encode_npy(labels)
    raise ValueError(f"save_format must be one of {SAVE_FORMATS}, got {save_format!r}")


def _checked_label_map(labels: np.ndarray) -> np.ndarray:
    a = np.asarray(labels)
    if a.ndim != 2:
        raise ValueError(f"a label map is 2-D (H, W), got shape {a.shape}")
    if a.dtype == bool:
        return a.astype(np.uint8)
    if a.dtype in (np.uint8, np.uint16):
        return a
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"a label map holds integers, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() > MAX_OBJECTS):
        raise ValueError(f"label map values must lie in 0..{MAX_OBJECTS}")
    return a.astype(np.uint8 if not a.size or a.max() <= 255 else np.uint16)


def save_label_map(path: str | os.PathLike, labels: np.ndarray,
                   object_ids: Sequence[str] | None = None) -> None:
    """Save a label map atomically; the format follows the file's suffix.

    ``.png``: 8-bit grayscale (mode ``L``) for uint8, 16-bit grayscale for uint16 (values are the
    object ids, so the file looks almost black in a viewer). ``.npy``: the array itself.
    ``labels``: (H, W) uint8/uint16 (other integer dtypes are narrowed when their values fit).
    ``object_ids``: the store's object ids of labels 1..N; a PNG keeps them (text chunk
    :data:`OBJECTS_KEY`) so that a reader can tell which save of the objects the file is from
    (:func:`label_map_object_ids`).
    """
    p = Path(path)
    fmt = p.suffix.lower().lstrip(".")
    if fmt not in SAVE_FORMATS:
        raise ValueError(f"a mask file must end in .png or .npy, got {p.name}")
    atomic_write(p, encode_label_map(labels, fmt, object_ids))


def label_map_object_ids(path: str | os.PathLike) -> list[str] | None:
    """The object ids a PNG label map was saved with (label i = item i - 1), None when the file
    holds none (a ``.npy`` file, a file from DEXTR-AnnoTool or from before this was kept) or
    cannot be read. Reads the header only."""
    p = Path(path)
    if p.suffix.lower() != ".png":
        return None
    try:
        with Image.open(p) as img:
            text = img.info.get(OBJECTS_KEY)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None
    if not isinstance(text, str):
        return None
    return text.split(",") if text else []


def load_label_map(path: str | os.PathLike) -> np.ndarray:
    """Read a label map saved by :func:`save_label_map` (or by DEXTR-AnnoTool).

    Returns uint8 (H, W), or uint16 where the file holds values above 255. Palette PNGs are read as
    their indices. Raises :class:`MaskFileError` naming the file when it is missing, corrupt or not
    a single-channel integer image.
    """
    p = Path(path)
    fix = "delete the file and annotate the image again, or restore it from a backup"
    if not p.is_file():
        raise MaskFileError(f"Mask file not found: {p}. Annotate the image again to recreate it.")
    if p.suffix.lower() == ".npy":
        try:
            a = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise MaskFileError(f"Cannot read mask file {p}: {exc}; {fix}.") from exc
    else:
        try:
            with Image.open(p) as img:
                # the header first: a mask file is never decoded beyond the photos' pixel budget
                if img.width * img.height > max_pixels():
                    raise MaskFileError(
                        f"Mask file {p} is {img.width} x {img.height} px, larger than any photo "
                        f"this server decodes (optional.max_image_megapixels); {fix}."
                    )
                img.load()
                if img.mode not in ("L", "P", "1", "I", "I;16", "I;16B", "I;16L", "I;16N"):
                    raise MaskFileError(
                        f"Mask file {p} is a {img.mode} image, not a single-channel label map "
                        f"(0 = background, 1..N = objects); {fix}."
                    )
                a = np.asarray(img)
        except MaskFileError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise MaskFileError(f"Cannot read mask file {p}: {exc}; {fix}.") from exc
    if a.ndim != 2 or not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise MaskFileError(
            f"Mask file {p} holds a {a.dtype} array of shape {a.shape}, not an (H, W) integer "
            f"label map; {fix}."
        )
    if a.size and (a.min() < 0 or a.max() > MAX_OBJECTS):
        raise MaskFileError(f"Mask file {p} has values outside 0..{MAX_OBJECTS}; {fix}.")
    if a.dtype in (np.uint8, np.uint16):
        return np.ascontiguousarray(a)
    return a.astype(np.uint8 if not a.size or a.max() <= 255 else np.uint16)


def split_label_map(labels: np.ndarray) -> list[np.ndarray]:
    """Split a label map into bool (H, W) masks, one per object id 1..N (N = the largest value).

    Mask ``k`` (0-based) holds the pixels with value ``k + 1``; an object fully covered by later
    ones gives an empty mask, so list positions always match object indices.
    """
    a = np.asarray(labels)
    count = int(a.max()) if a.size else 0
    return [a == i for i in range(1, count + 1)]


# ---- object mask files (one per accepted object, keyed by its object id) --------------------


def object_mask_path(destination: str | os.PathLike, image_id: str, object_id: str) -> Path:
    """Where one accepted object's mask is kept while (and after) its image is annotated.

    ``<destination>/.drafts/<image_id>/<object_id>.png``: ``a/b/img.jpg`` with object id ``f00d``
    -> ``<destination>/.drafts/a/b/img.jpg/f00d.png``. Raises ``ValueError`` for an object id that
    is not a plain name (empty, with a slash or ``..``) and for image ids :func:`mask_path` refuses.
    """
    rel = _checked_image_id(image_id)
    oid = str(object_id)
    if not oid or "/" in oid or "\\" in oid or oid in (".", ".."):
        raise ValueError(f"object id {object_id!r} must be a plain name such as a uuid hex")
    return Path(destination, DRAFTS_DIR).joinpath(*rel.parts, f"{oid}.png")


def save_object_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write one object's bool (H, W) mask atomically as a 1-bit PNG."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"an object mask is 2-D (H, W), got shape {m.shape}")
    buffer = io.BytesIO()
    Image.fromarray(m.astype(bool, copy=False)).save(buffer, format="PNG")  # mode "1"
    atomic_write(path, buffer.getvalue())


def load_object_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None
                     ) -> np.ndarray | None:
    """One object's bool (H, W) mask from :func:`save_object_mask`, or None when the file is
    missing, unreadable or (with ``shape`` = (H, W)) of another size: the caller then rebuilds the
    mask another way (from the clicks)."""
    p = Path(path)
    try:
        with Image.open(p) as img:
            if img.width * img.height > max_pixels():  # never decoded beyond the budget
                return None
            img.load()
            a = np.asarray(img)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None
    if a.ndim != 2 or (shape is not None and a.shape != tuple(shape)):
        return None
    return a.astype(bool, copy=False)


# ---- overlaps between objects ----------------------------------------------------------------


def overlap_pixels(mask: np.ndarray, others: Sequence[np.ndarray]) -> list[int]:
    """How many pixels ``mask`` (bool (H, W)) shares with each of ``others`` (bool (H, W) each),
    in the order given."""
    m = np.asarray(mask, dtype=bool)
    return [int(np.count_nonzero(m & np.asarray(o, dtype=bool))) for o in others]


def made_label(own: np.ndarray, labels: np.ndarray, index: int) -> bool:
    """True when an object's own mask (bool (H, W)) is the one label ``index`` (1-based) of the
    label map ``labels`` was made from: the label's pixels are exactly the own mask's pixels that
    no later object (a label > ``index``) took. False for an object file changed after the label
    map was saved (a correction left without *Image done*)."""
    labels = np.asarray(labels)
    if own.shape != labels.shape:
        return False
    return bool(np.array_equal(labels == index, own & ~(labels > index)))


def cut_mask(earlier: np.ndarray, later: np.ndarray) -> np.ndarray:
    """``earlier`` without the pixels of ``later`` (both bool (H, W)): what an earlier object keeps
    when the user cuts a later, overlapping object out of it."""
    return np.asarray(earlier, dtype=bool) & ~np.asarray(later, dtype=bool)


def shared_pixels(masks: Sequence[np.ndarray]) -> int:
    """Pixels covered by two or more of ``masks`` (bool (H, W) each): what a label map, one label
    per pixel, gives to the later object only."""
    if not len(masks):
        return 0
    count = np.zeros(np.asarray(masks[0]).shape, dtype=np.uint16)
    for m in masks:
        count += np.asarray(m, dtype=bool)
    return int(np.count_nonzero(count > 1))


# ---- the clicks of the object being made (kept over a page refresh) -------------------------


def clicks_path(destination: str | os.PathLike, image_id: str) -> Path:
    """Where the clicks of an image's unfinished object are kept between page loads:
    ``<destination>/.drafts/<image id>.clicks.json`` (``a/b/img.jpg`` ->
    ``<destination>/.drafts/a/b/img.jpg.clicks.json``)."""
    rel = _checked_image_id(image_id)
    return Path(destination, DRAFTS_DIR).joinpath(*rel.parent.parts, f"{rel.name}.clicks.json")


def save_clicks(path: str | os.PathLike, annotator: str, points: Sequence[Sequence[float]]) -> None:
    """Keep ``points`` (full-image (x, y) pixels) of ``annotator``'s unfinished object atomically;
    no points removes the file."""
    p = Path(path)
    if not len(points):
        p.unlink(missing_ok=True)
        return
    doc = {"annotator": annotator, "points": [[float(x), float(y)] for x, y in points]}
    atomic_write(p, json.dumps(doc).encode("utf-8"))


def load_clicks(path: str | os.PathLike, annotator: str) -> list[list[float]]:
    """The clicks :func:`save_clicks` kept for ``annotator``; ``[]`` when there are none, they are
    another annotator's, or the file cannot be read."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        if doc.get("annotator") != annotator:
            return []
        return [[float(x), float(y)] for x, y in doc.get("points", [])]
    except (OSError, ValueError, TypeError, AttributeError):
        return []
