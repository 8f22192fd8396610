"""The progress store under a team: threads, two processes, and a kill -9 amid writes (the last
on both backends: the file store and PostgreSQL)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from dextr_core.store import ClaimError, ObjectRecord, ProgressStore, open_store

REPO = Path(__file__).resolve().parents[1]
POINTS = [[1, 50], [99, 50], [50, 1], [50, 99]]


def fake_ids(n: int) -> list[str]:
    return [f"part{i % 7}/img_{i:05d}.jpg" for i in range(n)]


def new_store(path: Path, n: int, **kwargs) -> ProgressStore:
    store = ProgressStore(path, path.parent / "no-source", **kwargs)
    store.add_images((image_id, 100, 100) for image_id in fake_ids(n))
    return store


def work_until_empty(store: ProgressStore, who: str, with_object: bool = True) -> list[str]:
    """claim_next -> (add_object) -> complete until nothing is left; returns the ids completed."""
    done = []
    while (rec := store.claim_next(who)) is not None:
        if with_object:
            store.add_object(rec.id, who, ObjectRecord(points=POINTS, label=who))
        store.complete(rec.id, who, 1.0)
        done.append(rec.id)
    return done


def check_each_image_claimed_and_completed_once(store: ProgressStore, n: int) -> None:
    events = store.events()
    claimed = Counter(e.image_id for e in events if e.action == "claimed")
    completed = Counter(e.image_id for e in events if e.action == "completed")
    assert set(claimed.values()) == {1} and len(claimed) == n
    assert set(completed.values()) == {1} and len(completed) == n
    summary = store.summary()
    assert summary["by_status"]["done"] == n and summary["by_status"]["todo"] == 0


@pytest.mark.parametrize("shared_instance", [True, False], ids=["one-store", "store-per-thread"])
def test_eight_threads_never_get_the_same_image(tmp_path, shared_instance):
    n = 320
    path = tmp_path / "p.json"
    store = new_store(path, n)
    results: dict[str, list[str]] = {}
    errors = []

    def worker(name: str) -> None:
        try:
            own = store if shared_instance else ProgressStore(path, tmp_path / "no-source")
            results[name] = work_until_empty(own, name)
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    all_done = [i for ids in results.values() for i in ids]
    assert len(all_done) == len(set(all_done)) == n
    for name, ids in results.items():  # every completion recorded, by its thread
        assert all(store.get(i).annotator == name for i in ids)
        assert all(o.label == name for i in ids[:3] for o in store.objects(i))
    check_each_image_claimed_and_completed_once(store, n)
    check_each_image_claimed_and_completed_once(ProgressStore(path, tmp_path), n)


def test_racing_claims_of_one_image_have_one_winner(tmp_path):
    store = new_store(tmp_path / "p.json", 40)
    winners: dict[str, list[str]] = {i: [] for i in fake_ids(40)}
    barrier = threading.Barrier(6)

    def worker(name: str) -> None:
        barrier.wait()
        for image_id in fake_ids(40):
            try:
                store.claim(image_id, name)
                winners[image_id].append(name)
            except ClaimError:
                pass

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(len(w) == 1 for w in winners.values())
    assert all(store.get(i).annotator == w[0] for i, w in winners.items())


def _process_worker(path: str, who: str, start, results) -> None:
    store = ProgressStore(path, Path(path).parent / "no-source", compact_bytes=64_000)
    try:
        start.wait(timeout=120)  # both processes open the store, then race for images together
        results.put((who, work_until_empty(store, who)))
    finally:
        store.close()


def test_two_processes_share_one_store(tmp_path):
    n = 400
    path = tmp_path / "p.json"
    new_store(path, n).close()
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(str(path), who, start, results))
             for who in ("proc-a", "proc-b")]
    for proc in procs:
        proc.start()
    got = dict(results.get(timeout=300) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    a, b = got["proc-a"], got["proc-b"]
    assert not set(a) & set(b), "an image was handed to both processes"
    assert len(a) + len(b) == n and a and b  # both got work
    store = ProgressStore(path, tmp_path)
    check_each_image_claimed_and_completed_once(store, n)
    assert {store.get(i).annotator for i in a} == {"proc-a"}
    assert {store.get(i).annotator for i in b} == {"proc-b"}
    assert store.backend._storage._generation > 0  # compactions happened while both were writing


CRASH_WRITER = """
import sys
from dextr_core.store import ObjectRecord, open_store
# a file store compacts every 6,000 bytes of journal: kills land in compactions too
store = open_store(sys.argv[1], ".", **({} if "://" in sys.argv[1] else {"compact_bytes": 6000}))
while (rec := store.claim_next("writer")) is not None:
    # a run killed between add_object and complete left its image claimed, with its object:
    # claim_next hands that image back first, and the writer resumes it instead of adding again
    if rec.n_objects == 0:
        store.add_object(rec.id, "writer", ObjectRecord(points=[[1, 1], [9, 1], [5, 0], [5, 9]],
                                                        object_id=rec.id.replace(".", "_")))
    done = store.complete(rec.id, "writer", 2.0)
    print(done.id, flush=True)
"""


def test_kill_9_of_a_writer_mid_stream_loses_no_acknowledged_update(store_location):
    s = open_store(store_location, ".")
    s.add_images((f"img_{i:04d}.jpg", 10, 10) for i in range(600))
    s.close()
    location = str(store_location)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    acknowledged: list[str] = []
    for kill_after in (40, 95, 150):
        proc = subprocess.Popen([sys.executable, "-c", CRASH_WRITER, location],
                                stdout=subprocess.PIPE, text=True, env=env)
        for seen, line in enumerate(proc.stdout, start=1):
            acknowledged.append(line.strip())
            if seen == kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                break
        # lines printed before the kill landed are acknowledged too
        acknowledged.extend(line.strip() for line in proc.stdout)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        s = open_store(location, ".")  # must open: no corruption
        for image_id in acknowledged:
            rec = s.get(image_id)
            assert rec.status == "done" and rec.n_objects == 1, image_id
        assert s.summary()["by_status"]["done"] >= len(acknowledged)
        s.close()
    assert len(set(acknowledged)) == len(acknowledged) >= 40 + 95 + 150
    # every image the killed writers finished has exactly one object (no retry duplicated one);
    # the last writer may have been killed between claiming an image and adding its object
    s = open_store(location, ".")
    for rec in s.images():
        n = len(s.objects(rec.id))
        assert n == 1 if rec.status == "done" else n <= 1, (rec.id, rec.status, n)
    s.close()
