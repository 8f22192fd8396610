"""Pixels a later object cut from an earlier one, as the earlier object's record keeps them, and
an object's mask rebuilt from its record (model mask, strokes and cuts, in the order they came).

When an annotator accepts an object with "cut from the earlier object(s)"
(:meth:`dextr_core.session.AnnotationSession.accept`), every earlier object it overlaps loses
those pixels in its own mask file, and its record gets one :class:`Cut`: **the pixels it lost**,
as a COCO compressed RLE (pycocotools), with ``after``, how many of the object's strokes came
before the cut, and ``by``, the object id of the object that took them (for people reading the
record; nothing is computed from it).

Why the pixels and not only the id of the cutting object: a rebuild from an id would need that
object's mask *as it was at the cut*, which is gone once that object is edited (its strokes
change its mask) or deleted (a deleted object's pixels are not given back to the earlier one:
its file keeps the cut). The removed pixels are exact and independent of what happens to the
other object later. They are small: one RLE string of the overlap only (runs per column of the
shared area, typically a few hundred bytes; see docs/ARCHITECTURE.md), never the whole mask,
and only objects that were cut carry any. ``after`` keeps the order with the strokes: a Paint
stroke made after the cut (an edit) may give some of the pixels back, and a rebuild applies the
cut before it, as the file had it.

An object's mask from its record (:func:`rebuild_mask`): the model's mask for its clicks (or
an empty one), then its strokes and cuts in order. It equals the object's mask file whenever the
model gives the same mask for the same clicks. Stored as ``{"by", "after", "size": [H, W],
"counts"}`` (:meth:`Cut.to_doc` / :meth:`Cut.from_doc`); :func:`cut_problem` is the store's
record check (cheap: the RLE is decoded only when a mask is rebuilt).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .strokes import Stroke, apply_strokes

#: The characters of a COCO compressed RLE ``counts`` string (pycocotools' ``rleToString``).
_COUNTS_RE = re.compile(r"[0-o]*")
_OBJECT_ID_RE = re.compile(r"[A-Za-z0-9_-]{0,64}")


@dataclass(frozen=True)
class Cut:
    """Pixels an object lost to a later one: ``size`` (H, W) and ``counts`` (a COCO compressed
    RLE of the removed pixels, column-major as pycocotools writes it); ``after``: how many of the
    object's strokes were applied before the cut; ``by``: the object id of the object that took
    them ("" when not known)."""

    size: tuple[int, int]
    counts: str
    after: int = 0
    by: str = ""

    def __post_init__(self):
        problem = cut_problem(self.to_doc())
        if problem:
            raise ValueError(problem)
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))

    @classmethod
    def of(cls, removed: np.ndarray, after: int = 0, by: str = "") -> Cut:
        """The cut of the bool (H, W) mask ``removed`` (the pixels the object loses)."""
        from pycocotools import mask as mask_utils

        m = np.asarray(removed, dtype=bool)
        if m.ndim != 2:
            raise ValueError(f"a cut is a 2-D (H, W) mask, got shape {m.shape}")
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        return cls((int(m.shape[0]), int(m.shape[1])), rle["counts"].decode("ascii"), after, by)

    def mask(self, shape: Sequence[int]) -> np.ndarray | None:
        """The removed pixels, bool (H, W) for ``shape`` = (H, W); None when the cut was made on a
        photo of another size (the photo was replaced since) or its RLE cannot be decoded."""
        from pycocotools import mask as mask_utils

        if tuple(int(v) for v in shape) != self.size:
            return None
        try:
            decoded = mask_utils.decode({"size": list(self.size), "counts": self.counts})
        except (ValueError, TypeError):
            return None
        return decoded.astype(bool)

    def to_doc(self) -> dict:
        """The cut as a JSON document ``{"by", "after", "size": [H, W], "counts"}`` (what the
        progress store keeps in the object's ``cuts``)."""
        return {"by": self.by, "after": self.after, "size": list(self.size),
                "counts": self.counts}

    @classmethod
    def from_doc(cls, doc) -> Cut:
        """The inverse of :meth:`to_doc`; ValueError naming what is wrong for anything else."""
        problem = cut_problem(doc)
        if problem:
            raise ValueError(problem)
        return cls(tuple(doc["size"]), doc["counts"], doc.get("after", 0), doc.get("by", ""))


def cut_problem(doc) -> str | None:
    """Why ``doc`` is not a stored cut (a sentence), None when it is one."""
    if not isinstance(doc, dict):
        return "a cut is not a document {by, after, size, counts}"
    size, counts = doc.get("size"), doc.get("counts")
    if (not isinstance(size, list | tuple) or len(size) != 2
            or not all(type(v) is int and v > 0 for v in size)):
        return f"cut size {size!r:.40} is not [height, width] in pixels"
    if type(counts) is not str or not counts or not _COUNTS_RE.fullmatch(counts):
        return f"cut counts {counts!r:.40} is not a COCO compressed RLE string"
    after = doc.get("after", 0)
    if type(after) is not int or after < 0:
        return f"cut after {after!r:.40} is not a number of strokes (0 or more)"
    by = doc.get("by", "")
    if type(by) is not str or not _OBJECT_ID_RE.fullmatch(by):
        return f"cut by {by!r:.40} is not an object id"
    return None


def cuts_from_docs(docs) -> list[Cut]:
    """Stored cut documents (see :meth:`Cut.to_doc`) -> cuts; None or [] -> []."""
    return [Cut.from_doc(d) for d in docs or ()]


def rebuild_mask(model: np.ndarray | None, strokes: Sequence[Stroke], cuts: Sequence[Cut],
                 shape: Sequence[int]) -> np.ndarray:
    """An object's bool (H, W) mask from its record: ``model`` (the model's mask for its clicks;
    None: an empty one of ``shape`` = (H, W)) with ``strokes`` and ``cuts`` applied in the order
    they were made (a cut with ``after = k`` comes after the first k strokes; one with ``after``
    beyond the strokes comes last). A cut :meth:`Cut.mask` cannot give for ``shape`` is left
    out. Returns a new array (the input is not changed)."""
    out = apply_strokes(model, (), shape)
    done = 0
    for cut in sorted(cuts, key=lambda c: c.after):  # stable: cuts of one moment keep their order
        upto = min(cut.after, len(strokes))
        out = apply_strokes(out, strokes[done:upto])
        done = upto
        removed = cut.mask(out.shape)
        if removed is not None:
            out &= ~removed
    return apply_strokes(out, strokes[done:])
