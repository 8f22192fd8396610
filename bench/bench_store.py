"""Benchmark the progress store at 100,000 images; prints a table.

    python bench/bench_store.py [--images 100000] [--ops 300] [--done-fraction 0.3]
                                [--backend tinydb|postgresql] [--url postgresql://...]

Builds a store in a temporary folder through the bulk API (fake ids, no image files), with a share
of the images already done (two objects each, with their activity events) so that the file has a
realistic size, then measures: opening it in a new ProgressStore (snapshot + journal replay +
indexes), claim_next / add_object / complete / skip / heartbeat / get (median and p95 over
``--ops`` calls each, every write fsync'd), summary(), events(limit=50), one compaction (the
snapshot rewrite that happens each time the journal passes 16 MB), and the file sizes. Finally it
opens the store again with a journal to replay. Wall-clock milliseconds, plus the CPU time of the
first open (less sensitive to a busy machine).

``--backend postgresql`` builds the same file store, moves it into PostgreSQL with
``dextr_core.store.postgres.copy_to_postgres`` (timed: the ``copy`` row) and times the same calls
on a :class:`PostgresStore` (no compaction or journal rows). Without ``--url`` it starts a
throwaway local server (tests/pg_server.py) with PostgreSQL's default durability (fsync on,
synchronous commit), so every write waits for its WAL flush like the file store's fsync.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from store_fill import fake_id, mark_done  # noqa: E402

from dextr_core.store import ObjectRecord, ProgressStore, _encode_points  # noqa: E402

POINTS = [[10.5, 50.25], [90.0, 50.0], [50.0, 10.75], [50.5, 90.0]]


def build(path: Path, n_images: int, done_fraction: float) -> float:
    """Create the store; returns seconds taken (not part of the measured figures)."""
    t0 = time.perf_counter()
    store = ProgressStore(path, path.parent / "no-source")
    store.add_images((fake_id(i), 640, 480) for i in range(n_images))
    annotators = ["ann", "bob", "cem", "dia"]
    now = time.time() - 86400.0

    def finished(i: int):
        who, t = annotators[i % len(annotators)], now + i
        objects = [
            {"index": k, "label": "object", "points": _encode_points(POINTS), "engine": "DEXTR",
             "annotator": who, "created_at": t, "seconds": 5.0}
            for k in (1, 2)
        ]
        return fake_id(i), who, t, objects, 12.0

    # the finished share in one transaction, as if the team had worked through it; the timed
    # operations below use the public API
    mark_done(store, (finished(i) for i in range(int(n_images * done_fraction))))
    store.close()
    return time.perf_counter() - t0


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return (time.perf_counter() - t0) * 1000.0, out


def stats(ms: list[float]) -> tuple[float, float]:
    ordered = sorted(ms)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return statistics.median(ordered), p95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--done-fraction", type=float, default=0.3)
    parser.add_argument("--backend", choices=("tinydb", "postgresql"), default="tinydb")
    parser.add_argument("--url", default=None,
                        help="postgresql:// URL of an empty database (default: a throwaway "
                             "local server)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ".dextr_progress.json"
        build_s = build(path, args.images, args.done_fraction)
        snapshot_mb = path.stat().st_size / 1e6

        server = None
        if args.backend == "postgresql":
            url = args.url
            if url is None:
                sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
                from pg_server import PgServer

                server = PgServer(durable=True)
                url = server.url_of(server.new_db())
            from dextr_core.store.postgres import PostgresStore, copy_to_postgres

            copy_ms, _ = timed(copy_to_postgres, path, url, Path(tmp) / "no-source")
            cpu0 = time.process_time()
            open_ms, store = timed(PostgresStore, url, Path(tmp) / "no-source")
            open_cpu_ms = (time.process_time() - cpu0) * 1000.0
            rows: list[tuple[str, str, str]] = [
                ("copy from the file store (verified)", f"{copy_ms:.0f}", ""),
                ("open (connect, schema check)", f"{open_ms:.0f}", ""),
            ]
        else:
            cpu0 = time.process_time()
            open_ms, store = timed(ProgressStore, path, Path(tmp) / "no-source")
            open_cpu_ms = (time.process_time() - cpu0) * 1000.0
            rows = [
                ("open (snapshot only)", f"{open_ms:.0f}", ""),
                ("open (snapshot only), CPU time", f"{open_cpu_ms:.0f}", ""),
            ]

        timings: dict[str, list[float]] = {k: [] for k in (
            "claim_next", "add_object", "heartbeat", "complete", "skip", "get")}
        for k in range(args.ops):
            who = f"worker{k % 8}"
            ms, rec = timed(store.claim_next, who)
            timings["claim_next"].append(ms)
            obj = ObjectRecord(label="object", points=POINTS, engine="DEXTR", seconds=4.0)
            timings["add_object"].append(timed(store.add_object, rec.id, who, obj)[0])
            timings["heartbeat"].append(timed(store.heartbeat, rec.id, who)[0])
            timings["get"].append(timed(store.get, rec.id)[0])
            if k % 2:
                timings["skip"].append(timed(store.skip, rec.id, who, "blurred")[0])
            else:
                timings["complete"].append(timed(store.complete, rec.id, who, 9.0)[0])
        for name, ms in timings.items():
            med, p95 = stats(ms)
            rows.append((f"{name} (n={len(ms)})", f"{med:.2f}", f"{p95:.2f}"))

        summary_ms = [timed(store.summary)[0] for _ in range(5)]
        med, p95 = stats(summary_ms)
        rows.append(("summary (n=5)", f"{med:.0f}", f"{max(summary_ms):.0f} (max)"))
        images_ms = [timed(store.images)[0] for _ in range(3)]
        rows.append(("images() - every record (n=3)", f"{statistics.median(images_ms):.0f}", ""))
        ids_ms = [timed(store.image_ids)[0] for _ in range(3)]
        rows.append(("image_ids() - every id (n=3)", f"{statistics.median(ids_ms):.1f}", ""))
        objects_ms = [timed(store.objects)[0] for _ in range(3)]
        rows.append(("objects() - every object (n=3)", f"{statistics.median(objects_ms):.0f}", ""))
        events_ms = [timed(store.events, None, 50)[0] for _ in range(5)]
        rows.append(("events(limit=50) (n=5)", f"{statistics.median(events_ms):.2f}", ""))
        if args.backend == "postgresql":
            n_events = len(store.events())
            summary = store.summary()
            store.close()
            if server is not None:
                server.stop()
            journal_kb = 0.0
        else:
            journal_kb = store.backend._storage.journal_size / 1e3
            compact_ms, _ = timed(store.backend._storage.compact)
            rows.append(("compaction (every 16 MB of journal)", f"{compact_ms:.0f}", ""))
            store.close()

            # write some more so that the next open has a journal to replay
            extra = ProgressStore(path, Path(tmp) / "no-source")
            for _ in range(args.ops):
                rec = extra.claim_next("late")
                extra.complete(rec.id, "late", 3.0)
            extra.close()
            reopen_ms, store = timed(ProgressStore, path, Path(tmp) / "no-source")
            rows.append((f"open (snapshot + {args.ops} journal lines)", f"{reopen_ms:.0f}", ""))
            n_events = len(store.backend._event_ids)
            summary = store.summary()
            store.close()

    print(f"Progress store benchmark ({args.backend}): {args.images} images, {summary['by_status']['done']} done, "
          f"{n_events} events; build (not timed) {build_s:.1f} s")
    print(f"snapshot file {snapshot_mb:.1f} MB; journal after the timed writes {journal_kb:.0f} kB")
    print()
    width = max(len(r[0]) for r in rows)
    print(f"| {'operation':<{width}} | median ms | p95 ms |")
    print(f"|{'-' * (width + 2)}|-----------|--------|")
    for name, med, p95 in rows:
        print(f"| {name:<{width}} | {med:>9} | {p95:>6} |")


if __name__ == "__main__":
    main()
