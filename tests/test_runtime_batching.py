"""Concurrent calls batched into one forward (dextr_core.batching.DynamicBatcher): every caller gets
its own row, equal to what it would get alone; callers that arrive while a forward runs form the
next batch; padding to fixed sizes; an error reaches every caller of its batch. A forward made
for the test stands in for the network (the full one takes seconds per call)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from dextr_core.batching import DynamicBatcher

SHAPE = (8, 8, 4)


def per_row(batch: np.ndarray) -> np.ndarray:
    """A 'network' whose row i depends only on input row i: ``(n, 8, 8, 4) -> (n, 8, 8, 1)``."""
    return np.tanh(batch.sum(axis=-1, keepdims=True) / 100.0) + batch[..., :1] ** 2 / 1e4


def inputs(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.uniform(0, 255, SHAPE).astype(np.float32) for _ in range(n)]


def wait_until(condition, limit_s: float = 60.0) -> None:
    """Poll ``condition`` (never a timing assertion: a bound against hanging forever)."""
    end = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


def run_threads(batcher, xs) -> dict[int, np.ndarray]:
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i):
        try:
            results[i] = batcher(xs[i])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def test_eight_threads_each_get_their_own_result_from_one_batched_forward():
    xs = inputs(8)
    gate = threading.Event()
    calls = []

    def forward(batch):
        calls.append(len(batch))
        if len(calls) == 1:  # the first caller's forward runs until the other seven wait
            gate.wait(timeout=120)
        return per_row(batch)

    batcher = DynamicBatcher(forward, max_batch=8, wait_s=0.0)
    first = threading.Thread(target=lambda: results.update({0: batcher(xs[0])}))
    results: dict[int, np.ndarray] = {}
    first.start()
    wait_until(lambda: len(calls) == 1)
    others = {}
    rest = threading.Thread(target=lambda: others.update(run_threads(batcher, xs[1:])))
    rest.start()
    wait_until(lambda: batcher.pending() == 7)
    gate.set()
    first.join(timeout=120)
    rest.join(timeout=120)
    results.update({i + 1: y for i, y in others.items()})
    assert calls == [1, 7] and batcher.batch_sizes == [1, 7]
    for i, x in enumerate(xs):
        alone = per_row(x[None])[0]
        np.testing.assert_array_equal(results[i], alone)  # its own row, as if it ran alone
    assert len({r.tobytes() for r in results.values()}) == 8  # eight distinct outputs


def test_a_lone_caller_runs_alone_after_the_wait():
    batcher = DynamicBatcher(per_row, max_batch=4, wait_s=0.0)
    x = inputs(1)[0]
    np.testing.assert_array_equal(batcher(x), per_row(x[None])[0])
    assert batcher.batch_sizes == [1]


def test_batches_never_exceed_max_batch_and_everyone_is_served():
    xs = inputs(8)
    gate = threading.Event()

    def forward(batch):
        if not gate.is_set():
            gate.wait(timeout=120)
        return per_row(batch)

    batcher = DynamicBatcher(forward, max_batch=3, wait_s=0.0)
    results = {}
    runner = threading.Thread(target=lambda: results.update(run_threads(batcher, xs)))
    runner.start()
    wait_until(lambda: batcher.pending() >= 7)  # one forward held, seven waiting
    gate.set()
    runner.join(timeout=120)
    assert sorted(results) == list(range(8))
    assert max(batcher.batch_sizes) <= 3 and sum(batcher.batch_sizes) == 8
    for i, x in enumerate(xs):
        np.testing.assert_array_equal(results[i], per_row(x[None])[0])


def test_batches_are_padded_to_the_allowed_sizes():
    seen = []

    def forward(batch):
        seen.append(batch.shape[0])
        return per_row(batch)

    batcher = DynamicBatcher(forward, max_batch=4, wait_s=0.0, sizes=(1, 2, 4))
    gate = threading.Event()
    first_done = {}

    def held(batch):
        gate.wait(timeout=120)
        return forward(batch)

    batcher._forward = held
    xs = inputs(4)
    t0 = threading.Thread(target=lambda: first_done.update({0: batcher(xs[0])}))
    t0.start()
    wait_until(lambda: batcher._running)
    results = {}
    rest = threading.Thread(target=lambda: results.update(run_threads(batcher, xs[1:])))
    rest.start()
    wait_until(lambda: batcher.pending() == 3)
    gate.set()
    t0.join(timeout=120)
    rest.join(timeout=120)
    assert seen == [1, 4]  # three requests padded to the allowed size 4
    assert batcher.batch_sizes == [1, 3]
    for i, x in enumerate(xs[1:]):
        np.testing.assert_array_equal(results[i], per_row(x[None])[0])
    with pytest.raises(ValueError, match="must be max_batch"):
        DynamicBatcher(per_row, max_batch=8, sizes=(1, 2, 4))


def test_an_error_in_the_forward_reaches_every_caller_of_that_batch_and_the_next_works():
    calls = []

    def forward(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return per_row(batch)

    batcher = DynamicBatcher(forward, max_batch=4, wait_s=0.0)
    x = inputs(1)[0]
    with pytest.raises(RuntimeError, match="device lost"):
        batcher(x)
    np.testing.assert_array_equal(batcher(x), per_row(x[None])[0])  # not stuck afterwards
    assert batcher.pending() == 0 and not batcher._running
