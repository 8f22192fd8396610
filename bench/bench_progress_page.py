"""Benchmark the leads' progress page at 100,000 images of which 10,000 are done; prints a table.

    python bench/bench_progress_page.py [--images 100000] [--done 10000] [--repeats 5]

Builds, in a temporary folder, a config (``optional.update: false``: no folder scan) and a progress
store through the store's bulk API (``add_images``, fake ids) plus its internal bulk path for the
finished work (done images with two or three objects each, labels from the config, completion times
spread over three days by four annotators, their activity events), a label-map PNG per done image
(so that the store's start-up reconcile keeps them done) and real photos for the newest done images
(the gallery's first pages). Then it renders pages/progress.py with streamlit.testing.v1.AppTest and
times whole script runs:

* first render: a new process's first view; opens the store (snapshot, indexes, reconcile);
* new session / rerun, store unchanged: the store and the page's snapshot are cached;
* rerun after a change: another annotator (a second process with its own store object) finished
  an image, so the page reads the summary, finished images and new events again (the
  per-class counts follow the events; ``store.objects()`` is read in full only at the first
  render);
* gallery, next page: a new page of thumbnails (decoded, overlaid, cached per file version);
* the parts of the first render, timed once each outside Streamlit.

Timings include Streamlit's own work in AppTest (building and serialising the elements), not the
browser. They are noisy on a shared machine: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from store_fill import fake_id, mark_done  # noqa: E402

from dextr_core.masks import label_map, mask_path, save_label_map  # noqa: E402
from dextr_core.store import ObjectRecord, ProgressStore  # noqa: E402

LABELS = ("car", "person", "bicycle", "dog")
ANNOTATORS = ("ana", "bob", "cem", "dia")
SIZE = (320, 240)  # width, height of every (fake) image
PHOTOS = 48  # newest done images that get a real photo file (4 gallery pages)


def boxes(i: int) -> list[tuple[int, int, int, int]]:
    """Two or three object boxes (x0, y0, x1, y1) for image ``i``."""
    out = [(10 + i % 40, 20, 150, 200), (120, 30 + i % 30, 300, 180)]
    if i % 3 == 0:
        out.append((60, 60, 220, 120))
    return out


def build(folder: Path, n_images: int, n_done: int) -> tuple[Path, float]:
    """Write config, store, masks and photos under ``folder``; returns (config path, seconds)."""
    t0 = time.perf_counter()
    source, destination = folder / "images", folder / "masks"
    source.mkdir()
    cfg_path = folder / "anno_cfg.yml"
    cfg_path.write_text(
        "required:\n  source: images\n  destination: masks\n"
        f"optional:\n  update: false\n  labels: [{', '.join(LABELS)}]\n"
        "  weights: no-weights.h5\n"
    )
    store = ProgressStore(source / ".dextr_progress.json", source)
    store.add_images((fake_id(i), SIZE[0], SIZE[1]) for i in range(n_images))
    start = time.time() - 3 * 86400.0
    step = 3 * 86400.0 / max(1, n_done)

    def finished(i: int):
        who, t = ANNOTATORS[i % len(ANNOTATORS)], start + i * step
        objects = [
            {"index": k, "label": LABELS[(i + k) % len(LABELS)],
             "points": [[x0, (y0 + y1) / 2], [x1, (y0 + y1) / 2], [(x0 + x1) / 2, y0],
                        [(x0 + x1) / 2, y1]],
             "engine": "DEXTR", "annotator": who, "created_at": t - 10 + k,
             "seconds": 4.0 + (i + k) % 7}
            for k, (x0, y0, x1, y1) in enumerate(boxes(i), start=1)
        ]
        return fake_id(i), who, t, objects, float(sum(o["seconds"] for o in objects) + 3)

    mark_done(store, (finished(i) for i in range(n_done)))
    store.close()

    width, height = SIZE
    rng = np.random.default_rng(0)
    for i in range(n_done):
        masks = []
        for x0, y0, x1, y1 in boxes(i):
            m = np.zeros((height, width), bool)
            m[y0:y1 + 1, x0:x1 + 1] = True
            masks.append(m)
        # plain PIL save, no fsync: 10,000 fsyncs would dominate the set-up time
        path = mask_path(destination, fake_id(i), "_mask", "png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label_map(masks, (height, width))).save(path)
    for i in range(max(0, n_done - PHOTOS), n_done):
        photo = source / fake_id(i)
        photo.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photo, quality=85)
    return cfg_path, time.perf_counter() - t0


def finish_one(cfg_path: Path, i: int) -> None:
    """Another annotator finishes image ``i`` (through the public API, as a second process)."""
    from dextr_core.config import load_config

    cfg = load_config(cfg_path)
    store = ProgressStore(cfg.progress_file, cfg.source, claim_timeout_s=1800.0)
    image_id = fake_id(i)
    store.claim(image_id, "eve")
    x0, y0, x1, y1 = boxes(i)[0]
    store.add_object(image_id, "eve", ObjectRecord(
        image_id=image_id, index=1, label=LABELS[0], engine="DEXTR", annotator="eve",
        points=[[x0, y0 + 5], [x1, y1 - 5], [x0 + 5, y0], [x1 - 5, y1]], seconds=6.0))
    m = np.zeros((SIZE[1], SIZE[0]), bool)
    m[y0:y1 + 1, x0:x1 + 1] = True
    save_label_map(mask_path(cfg.destination, image_id, "_mask", "png"),
                   label_map([m], m.shape))
    store.complete(image_id, "eve", seconds=8.0)
    store.close()


def other_annotator(cfg_path: Path, i: int) -> None:
    """Run :func:`finish_one` in a second process, as another server would (a second store in
    this process would also skew the timings through its garbage-collection load)."""
    subprocess.run([sys.executable, __file__, "--finish-one", str(cfg_path), str(i)],
                   check=True, timeout=300)


def timed_run(at) -> float:
    t0 = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"the page raised: {at.exception}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--done", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--finish-one", nargs=2, metavar=("CONFIG", "INDEX"),
                        help=argparse.SUPPRESS)  # internal: the "other annotator" process
    args = parser.parse_args()
    if args.finish_one:
        finish_one(Path(args.finish_one[0]), int(args.finish_one[1]))
        return

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    page = str(REPO / "pages" / "progress.py")
    # AppTest scans installed packages for components once per AppTest object (about 1 s); a
    # server does that once at start. Scan once here and share it, so a "new session" below
    # costs what it costs on a running server.
    components = getattr(AppTest.from_string("pass").run(), "_bidi_component_manager", None)

    def session() -> AppTest:
        at = AppTest.from_file(page, default_timeout=120)
        if components is not None:
            at._bidi_component_manager = components
        return at

    with tempfile.TemporaryDirectory() as tmp:
        cfg_path, build_s = build(Path(tmp), args.images, args.done)
        os.environ["ANNO_CFG"] = str(cfg_path)
        store_mb = (Path(tmp) / "images" / ".dextr_progress.json").stat().st_size / 1e6
        rows: list[tuple[str, list[float]]] = []

        at = session()
        rows.append(("first render (opens the store: load + reconcile)", [timed_run(at)]))
        metrics = {m.label: m.value for m in at.metric}

        rows.append(("new session, store unchanged",
                     [timed_run(session()) for _ in range(args.repeats)]))
        rows.append(("rerun, store unchanged", [timed_run(at) for _ in range(args.repeats)]))

        changed = []
        for r in range(args.repeats):
            other_annotator(cfg_path, args.done + r)
            changed.append(timed_run(at))
        rows.append(("rerun after an image was finished elsewhere", changed))

        pages = []
        for p in range(2, 2 + min(args.repeats, 3)):
            t0 = time.perf_counter()
            at.number_input(key="gallery_page").set_value(p).run()
            pages.append(time.perf_counter() - t0)
        rows.append(("gallery, next page (12 new thumbnails)", pages))
        st.cache_resource.clear()

        # What the first render is made of (each timed once, outside Streamlit).
        from dextr_core.config import load_config
        from ui import progress_view as progress

        cfg = load_config(cfg_path)
        t0 = time.perf_counter()
        store = ProgressStore(cfg.progress_file, cfg.source)
        rows.append(("  part of first: ProgressStore(...) open", [time.perf_counter() - t0]))
        t0 = time.perf_counter()
        store.reconcile(cfg.destination, cfg.mask_suffix, cfg.save_format)
        rows.append(("  part of first: store.reconcile(...)", [time.perf_counter() - t0]))
        t0 = time.perf_counter()
        progress.read_snapshot(store)
        rows.append(("  part of first: page reads finished images", [time.perf_counter() - t0]))
        t0 = time.perf_counter()
        progress.read_object_index(store)
        rows.append(("  part of first: page reads store.objects()", [time.perf_counter() - t0]))
        store.close()

    print(f"progress page: {args.images:,} images, {args.done:,} done "
          f"(store snapshot {store_mb:.1f} MB; built in {build_s:.1f} s, not timed)")
    print(f"figures shown at first render: {metrics}")
    print()
    print(f"| {'scenario (whole script run, AppTest)':<50} | {'runs':>4} | {'median s':>8} | "
          f"{'max s':>6} |")
    print(f"|{'-' * 52}|{'-' * 6}|{'-' * 10}|{'-' * 8}|")
    for name, values in rows:
        print(f"| {name:<50} | {len(values):>4} | {statistics.median(values):>8.3f} | "
              f"{max(values):>6.3f} |")


if __name__ == "__main__":
    main()
