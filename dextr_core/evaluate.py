"""Mask quality from simulated extreme clicks: ``python -m dextr_core.evaluate DATASET_DIR``.

A dataset folder holds ``images/`` and ``masks/``; an image and its ground-truth mask share a file
stem (image extensions may differ). Each mask holds one object: pixels > 127 are the object, an
optional ``ignore`` value (e.g. 128, the uncertain boundary band of the GrabCut set) is left out of
both the object and the IoU. For every pair the four extreme points of the mask are taken
(:func:`dextr_core.points.extreme_points`), the segmenter turns them into a mask, and the IoU with
the ground truth is recorded together with the seconds the segmenter took.

Usage::

    python -m dextr_core.evaluate ../shared/evaldata/grabcut --ignore 128
    python -m dextr_core.evaluate ../shared/evaldata/coco_mval --segmenter fallback --limit 20 \\
        --csv results.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DextrError
from .images import image_size, is_image_file, load_image
from .masks import atomic_write
from .points import extreme_points

#: Where ``--weights`` points by default (the file ``python -m dextr_core.download`` writes).
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "dextr_pascal-sbd.h5"


class DatasetError(DextrError):
    """A dataset folder that cannot be evaluated; the message says which files and what to do."""


@dataclass(frozen=True)
class ObjectResult:
    """One evaluated object: its id (the file stem), IoU in [0, 1], seconds the segmenter took,
    and the image size in pixels."""

    id: str
    iou: float
    seconds: float
    width: int
    height: int
    #: IoU after each simulated click count, e.g. {4: 0.91, 6: 0.93, 8: 0.94} (4 always present).
    click_ious: dict[int, float] = field(default_factory=dict)


@dataclass
class EvalResult:
    """All objects of one evaluation run plus what was left out and why."""

    objects: list[ObjectResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "id: reason", e.g. an empty mask

    @property
    def miou(self) -> float:
        """Mean IoU over the evaluated objects (NaN when there are none)."""
        return float(np.mean([o.iou for o in self.objects])) if self.objects else float("nan")

    def miou_at(self, clicks: int) -> float:
        """Mean IoU after ``clicks`` simulated clicks over the objects that have that figure
        (NaN when none has it)."""
        values = [o.click_ious[clicks] for o in self.objects if clicks in o.click_ious]
        return float(np.mean(values)) if values else float("nan")

    @property
    def seconds(self) -> np.ndarray:
        """Seconds per object, as a float64 array in evaluation order."""
        return np.array([o.seconds for o in self.objects], dtype=np.float64)

    @property
    def mean_seconds(self) -> float:
        """Mean segmenter seconds per object (NaN when there are none)."""
        return float(self.seconds.mean()) if self.objects else float("nan")


@dataclass(frozen=True)
class Pair:
    """An image file and the ground-truth mask file with the same stem."""

    id: str
    image: Path
    mask: Path


def find_pairs(dataset_dir: str | os.PathLike) -> tuple[list[Pair], list[str]]:
    """Pair ``images/*`` with ``masks/*`` by file stem, sorted by id.

    Returns (pairs, warnings); warnings name files that have no partner. Raises
    :class:`DatasetError` when the folders are missing or no pair is found.
    """
    root = Path(dataset_dir)
    images_dir, masks_dir = root / "images", root / "masks"
    missing = [str(d) for d in (images_dir, masks_dir) if not d.is_dir()]
    if missing:
        raise DatasetError(
            f"{root} is not a dataset folder: missing {', '.join(missing)}. A dataset folder needs "
            "images/ and masks/ whose files share stems (images/a.jpg + masks/a.png)."
        )
    warnings: list[str] = []

    def by_stem(files: list[Path], folder: str) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for f in files:
            if f.stem in found:
                warnings.append(f"{folder}/{f.name} and {folder}/{found[f.stem].name} share a "
                                f"stem; using {found[f.stem].name}")
                continue
            found[f.stem] = f
        return found

    images = by_stem([p for p in sorted(images_dir.iterdir()) if is_image_file(p)], "images")
    masks = by_stem([p for p in sorted(masks_dir.iterdir())
                     if is_image_file(p) or p.suffix == ".npy"], "masks")
    warnings += [f"{images[s].name}: no mask with this stem in masks/, left out"
                 for s in sorted(set(images) - set(masks))]
    warnings += [f"{masks[s].name}: no image with this stem in images/, left out"
                 for s in sorted(set(masks) - set(images))]
    pairs = [Pair(s, images[s], masks[s]) for s in sorted(set(images) & set(masks))]
    if not pairs:
        raise DatasetError(
            f"No image/mask pairs in {root}: images/ has {len(images)} image(s), masks/ has "
            f"{len(masks)} mask(s), and none share a file stem. Name each mask like its image."
        )
    return pairs, warnings


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a ground-truth mask file as a (H, W) uint8 array (colour masks converted to gray).

    ``.npy`` files are read with NumPy (bool or integer arrays, values kept). EXIF orientation is
    applied like for images. Raises :class:`DatasetError` naming the file when it cannot be read.
    """
    p = Path(path)
    try:
        if p.suffix == ".npy":
            a = np.load(p, allow_pickle=False)
            if a.dtype == bool:
                a = a.astype(np.uint8) * 255
            if a.ndim != 2:
                raise ValueError(f"expected a 2-D array, got shape {a.shape}")
            return np.clip(a, 0, 255).astype(np.uint8)
        with Image.open(p) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("L"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"Cannot read mask {p}: {exc}. Replace or remove that file.") from exc


def _mask_size(path: Path) -> tuple[int, int]:
    if path.suffix == ".npy":
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        return int(shape[1]), int(shape[0])
    return image_size(path)


def check_sizes(pairs: Sequence[Pair]) -> None:
    """Raise :class:`DatasetError` listing every pair whose image and mask differ in size.

    Sizes are read from the file headers (upright, EXIF applied), so this is cheap. Files whose
    header cannot be read are not reported here (:func:`evaluate` skips them with the reason).
    """
    problems = []
    for pair in pairs:
        try:
            img_wh, mask_wh = image_size(pair.image), _mask_size(pair.mask)
        except (DextrError, OSError, ValueError):
            continue  # unreadable: evaluate() skips the pair and says why
        if img_wh != mask_wh:
            problems.append(
                f"{pair.id}: image {pair.image.name} is {img_wh[0]} x {img_wh[1]} but mask "
                f"{pair.mask.name} is {mask_wh[0]} x {mask_wh[1]} (width x height, upright)"
            )
    if problems:
        shown = "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
        raise DatasetError(
            f"{len(problems)} image/mask pair(s) do not match in size:\n  {shown}\n"
            "Each mask must have its image's size (after EXIF rotation); fix or remove these pairs."
        )


def iou(prediction: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Intersection over union of two bool (H, W) masks, counting only pixels where ``valid``.

    Returns 1.0 when both masks are empty on the valid pixels.
    """
    p, t = np.asarray(prediction, bool), np.asarray(truth, bool)
    if valid is not None:
        p, t = p & valid, t & valid
    union = np.count_nonzero(p | t)
    return 1.0 if union == 0 else float(np.count_nonzero(p & t) / union)


def next_click(prediction: np.ndarray, truth: np.ndarray,
               valid: np.ndarray | None = None) -> tuple[int, int] | None:
    """The simulated annotator's next click after the four extreme points: on the object's
    border next to the largest error region (DEXTR's refinement protocol).

    ``prediction``, ``truth``: bool (H, W); ``valid``: bool (H, W) or None (pixels that count).
    The largest 8-connected region of wrong pixels (missed object or taken-in background) is
    found, its innermost pixel (largest distance to the region's edge), and the click is the
    object border pixel (an object pixel with a non-object 4-neighbour) closest to that pixel.
    Returns (x, y) in pixels, or None when nothing is wrong.
    """
    p, t = np.asarray(prediction, bool), np.asarray(truth, bool)
    wrong = p ^ t
    if valid is not None:
        wrong &= valid
    if not wrong.any():
        return None
    count, comp, stats, _ = cv2.connectedComponentsWithStats(wrong.astype(np.uint8), connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = np.pad(comp == largest, 1)  # padded: the image edge counts as the region's edge
    inside = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    cy, cx = np.unravel_index(int(np.argmax(inside)), inside.shape)
    padded = np.pad(t, 1)
    edge = t & ~(padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    ys, xs = np.nonzero(edge)
    nearest = int(np.argmin((xs - cx) ** 2 + (ys - cy) ** 2))
    return int(xs[nearest]), int(ys[nearest])


def evaluate(
    dataset_dir: str | os.PathLike,
    segmenter,
    ignore: int | None = None,
    limit: int | None = None,
    progress: bool = False,
    on_object: Callable[[ObjectResult], None] | None = None,
    clicks: Sequence[int] = (4,),
    every: int = 1,
) -> EvalResult:
    """Segment every object of a dataset from its ground truth's four extreme points.

    ``segmenter`` follows the Segmenter protocol (``segment(image, points) -> bool (H, W)``).
    ``ignore``: a mask value left out of the object and of the IoU (128 for the GrabCut set).
    ``limit``: evaluate only the first N pairs (sorted by id); ``every``: only every N-th pair
    (after ``limit``; for quick looks). ``progress`` shows a tqdm bar on stderr; ``on_object`` is
    called with each :class:`ObjectResult` as it is made.
    ``clicks``: the click counts (each >= 4) to report IoU at. Beyond the four extreme points
    each further click is :func:`next_click` of the previous mask; the segmenter gets all points
    so far. ``ObjectResult.iou`` and ``seconds`` are those of the four-click mask.
    Seconds are wall-clock seconds of the ``segment`` call alone (image reading excluded).
    Pairs with an unreadable file or an empty mask are skipped and listed in ``skipped``.
    Raises :class:`DatasetError` for a folder without pairs or pairs that differ in size, and
    ``ValueError`` for a click count below 4 or ``every`` below 1.
    """
    counts = sorted({int(c) for c in clicks} | {4})
    if counts[0] < 4:
        raise ValueError(f"click counts start at the 4 extreme points, got {min(clicks)}")
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    pairs, _ = find_pairs(dataset_dir)
    if limit is not None:
        pairs = pairs[: max(0, int(limit))]
    pairs = pairs[:: int(every)]
    check_sizes(pairs)
    result = EvalResult()
    iterator = pairs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(pairs, desc=Path(dataset_dir).name, unit="obj", file=sys.stderr)
    for pair in iterator:
        try:
            gt = load_mask(pair.mask)
            image = load_image(pair.image)
        except DextrError as exc:
            result.skipped.append(f"{pair.id}: {exc}")
            continue
        if gt.shape != image.shape[:2]:
            result.skipped.append(
                f"{pair.id}: image is {image.shape[1]} x {image.shape[0]} but mask is "
                f"{gt.shape[1]} x {gt.shape[0]} once decoded; fix or remove this pair")
            continue
        valid = None if ignore is None else gt != ignore
        truth = gt > 127 if valid is None else (gt > 127) & valid
        if not truth.any():
            result.skipped.append(f"{pair.id}: the mask has no object pixel (> 127)")
            continue
        points = extreme_points(truth)
        start = time.perf_counter()
        prediction = segmenter.segment(image, points)
        seconds = time.perf_counter() - start
        if np.shape(prediction) != truth.shape:
            raise ValueError(f"{segmenter.name} returned a mask of shape {np.shape(prediction)} "
                             f"for image {pair.id} of shape {truth.shape}")
        click_ious = {4: iou(prediction, truth, valid)}
        n = 4
        while n < counts[-1]:
            click = next_click(prediction, truth, valid)
            if click is None:  # perfect already: later clicks change nothing
                click_ious.update({c: click_ious[n] for c in counts if c > n})
                break
            points = np.concatenate([points, np.array([click], dtype=points.dtype)])
            prediction = segmenter.segment(image, points)
            n += 1
            click_ious[n] = iou(prediction, truth, valid)
        obj = ObjectResult(pair.id, click_ious[4], seconds, int(image.shape[1]),
                           int(image.shape[0]), {c: click_ious[c] for c in counts})
        result.objects.append(obj)
        if on_object is not None:
            on_object(obj)
    return result


def mask_values_warning(pairs: Sequence[Pair], ignore: int | None, sample: int = 10) -> str | None:
    """A hint when masks hold a middle value (e.g. 128) that ``ignore`` does not leave out.

    Looks at the first ``sample`` masks; returns the message or None.
    """
    if ignore is not None:
        return None
    for pair in pairs[:sample]:
        try:
            values = np.unique(load_mask(pair.mask))
        except DextrError:
            continue  # evaluate() reports unreadable masks
        middle = values[(values > 0) & (values < 255)]
        if middle.size:
            return (
                f"note: mask {pair.mask.name} holds value(s) {', '.join(map(str, middle[:5]))} "
                "besides 0/255; values > 127 count as object. If that is an uncertain band "
                "(the GrabCut set's 128), pass --ignore 128 to leave it out of the IoU."
            )
    return None


def write_csv(path: str | os.PathLike, objects: Sequence[ObjectResult]) -> None:
    """Write one row per object (id, iou, seconds, width, height, then ``iou_<n>`` for each click
    count beyond 4 that was evaluated) to ``path``, atomically."""
    extra = sorted({c for o in objects for c in o.click_ious if c != 4})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "iou", "seconds", "width", "height"] + [f"iou_{c}" for c in extra])
    for o in objects:
        writer.writerow([o.id, f"{o.iou:.6f}", f"{o.seconds:.6f}", o.width, o.height]
                        + [f"{o.click_ious[c]:.6f}" if c in o.click_ious else "" for c in extra])
    data = buffer.getvalue().encode()
    atomic_write(Path(path), data)


def make_segmenter(kind: str | None, weights: Path, threshold: float | None,
                   sam_prompt: str = "box+points"):
    """The segmenter the CLI evaluates: ``"fallback"``, ``"dextr"`` or None (the weights file's
    model when it exists, else the GrabCut fallback). ``"dextr"`` means the ``weights`` file:
    DEXTR's .h5, or a SAM checkpoint (:class:`dextr_core.sam.SamSegmenter` prompted as
    ``sam_prompt``; its threshold is its own). ``threshold`` None keeps each one's default."""
    if kind is None:
        kind = "dextr" if Path(weights).is_file() else "fallback"
    if kind == "fallback":
        from .fallback import GrabCutSegmenter

        segmenter = GrabCutSegmenter() if threshold is None else GrabCutSegmenter(threshold=threshold)
        return segmenter.warm_up()  # the HED network loads here, not inside the first object
    from .segmenters import DextrSegmenter

    if not Path(weights).is_file():
        from .segmenters import DOWNLOAD_COMMAND

        raise DatasetError(
            f"DEXTR weights not found at {weights}. Get them with `{DOWNLOAD_COMMAND}`, pass "
            "--weights PATH, or evaluate the classical fallback with --segmenter fallback."
        )
    from .sam import SamSegmenter, describe_file

    if describe_file(weights) == "torch":
        return SamSegmenter(weights, prompt=sam_prompt)
    return DextrSegmenter(weights) if threshold is None else DextrSegmenter(weights, threshold)


def _parse_ignore(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ignore takes a mask value 0..255 or 'none', got {text!r}") from None
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"--ignore takes a mask value 0..255, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m dextr_core.evaluate``."""
    parser = argparse.ArgumentParser(
        prog="python -m dextr_core.evaluate",
        description="Segment each ground-truth object from its four extreme points and report "
        "the mean IoU and seconds per object.",
    )
    parser.add_argument("dataset_dir", type=Path, help="folder with images/ and masks/ (paired by stem)")
    parser.add_argument("--segmenter", choices=["fallback", "dextr"], default=None,
                        help="default: dextr if the --weights file exists, else fallback")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                        help=f"DEXTR weights file, or a SAM checkpoint such as mobile_sam.pt "
                        f"(default {DEFAULT_WEIGHTS})")
    from .sam import PROMPTS

    parser.add_argument("--sam-prompt", choices=PROMPTS,
                        default="box+points",
                        help="how a SAM checkpoint is prompted from the clicks (default "
                        "box+points: the box of the 4 extreme points plus every click)")
    parser.add_argument("--ignore", type=_parse_ignore, default=None, metavar="VALUE",
                        help="mask value left out of object and IoU, e.g. 128 for the GrabCut set "
                        "(default: none; a note is printed when masks hold such a middle value)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="evaluate only the first N pairs (sorted by id)")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="evaluate only every N-th pair (a quick look; default 1: all)")
    parser.add_argument("--clicks", type=int, nargs="+", default=[4], metavar="N",
                        help="report mIoU after these click counts (each >= 4), e.g. 4 6 8: each "
                        "click beyond the 4 extreme points goes on the object's border next to "
                        "the largest error region")
    parser.add_argument("--csv", type=Path, default=None, metavar="PATH",
                        help="write one row per object: id, iou, seconds, width, height")
    parser.add_argument("--threshold", type=float, default=None,
                        help="probability threshold of the segmenter (default: its own, "
                        "0.8 for DEXTR, 0.5 for the fallback)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation command; returns the process exit code (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        print(f"error: --threshold must lie strictly between 0 and 1, got {args.threshold}",
              file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 1:
        print(f"error: --limit must be at least 1, got {args.limit}", file=sys.stderr)
        return 2
    if args.every < 1:
        print(f"error: --every must be at least 1, got {args.every}", file=sys.stderr)
        return 2
    if min(args.clicks) < 4:
        print(f"error: --clicks counts start at the 4 extreme points, got {min(args.clicks)}; "
              "pass e.g. --clicks 4 6 8", file=sys.stderr)
        return 2
    try:
        pairs, warnings = find_pairs(args.dataset_dir)
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        hint = mask_values_warning(pairs, args.ignore)
        if hint:
            print(hint, file=sys.stderr)
        segmenter = make_segmenter(args.segmenter, args.weights, args.threshold, args.sam_prompt)
        result = evaluate(args.dataset_dir, segmenter, ignore=args.ignore, limit=args.limit,
                          progress=not args.no_progress, clicks=args.clicks,
                          every=args.every)
    except DextrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for s in result.skipped:
        print(f"skipped {s}", file=sys.stderr)
    if args.csv is not None:
        write_csv(args.csv, result.objects)
    sec = result.seconds
    print(f"segmenter: {segmenter.name}")
    print(f"dataset:   {args.dataset_dir} (ignore={args.ignore})")
    print(f"objects:   {len(result.objects)}" + (f" ({len(result.skipped)} skipped)" if result.skipped else ""))
    print(f"mIoU:      {result.miou:.4f}")
    counts = sorted(set(args.clicks) | {4})
    if counts != [4]:
        for c in counts:
            print(f"mIoU after {c} clicks: {result.miou_at(c):.4f}")
    if sec.size:
        print(f"seconds per object: mean {sec.mean():.3f}, median {np.median(sec):.3f}, "
              f"p90 {np.percentile(sec, 90):.3f}")
    if args.csv is not None:
        print(f"per-object results written to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
