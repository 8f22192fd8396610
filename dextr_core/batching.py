"""Many annotators at once: concurrent network calls gathered into one batched forward.

A segmenter is shared by every browser session of a server. :class:`DynamicBatcher` lets each
session's thread call it with its own input; calls that arrive while a forward runs (or within
``wait_s`` of the first one) are run together as one batch of up to ``max_batch`` and each
caller gets its own row back. No thread of its own: the first waiting caller runs the forward
for everyone waiting ("leader"), the others sleep on a condition until their row is there.

Batching pays where a batch of n costs much less than n forwards (a GPU at batch 1 is mostly
idle). On a CPU that is already busy with one forward it does not: see docs/benchmarks-dextr.md,
which measures it, and :class:`dextr_core.segmenters.DextrSegmenter`'s ``max_batch``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["DynamicBatcher"]


class _Request:
    __slots__ = ("x", "result", "error", "done")

    def __init__(self, x: np.ndarray):
        self.x = x
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False


class DynamicBatcher:
    """Run ``forward_batch`` on concurrent single inputs, batched.

    ``forward_batch``: ``float32 (n, *shape)`` -> array ``(n, ...)``, n <= ``max_batch``; called
    from one thread at a time. ``max_batch``: largest batch. ``wait_s``: how long the first
    caller of an idle batcher waits for others before running (seconds; requests that arrive
    while a forward runs need no wait: they form the next batch). ``sizes``: allowed batch
    sizes (ascending, the last one ``max_batch``); a batch is padded with zeros up to the next
    one, so a compiled runtime sees only these shapes (JAX compiles once per shape). Default:
    any size. ``clock``: for tests.

    ``batcher(x)`` returns ``forward_batch(batch)[i]`` for its own ``x`` as if it had run alone
    (row ``i`` of the batch); an exception in the forward is raised in every caller of that
    batch. :attr:`batch_sizes` records the size of each forward run (for tests and benchmarks).
    """

    def __init__(
        self,
        forward_batch: Callable[[np.ndarray], np.ndarray],
        max_batch: int = 8,
        wait_s: float = 0.003,
        sizes: Sequence[int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._forward = forward_batch
        self.max_batch = int(max_batch)
        self.wait_s = float(wait_s)
        self.sizes = tuple(sizes) if sizes else None
        if self.sizes and self.sizes[-1] != self.max_batch:
            raise ValueError(f"the largest batch size {self.sizes[-1]} must be max_batch")
        self._clock = clock
        self._condition = threading.Condition()
        self._pending: list[_Request] = []
        self._running = False
        self.batch_sizes: list[int] = []

    def pending(self) -> int:
        """How many calls are waiting for a forward (not counting the one running)."""
        with self._condition:
            return len(self._pending)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        request = _Request(np.ascontiguousarray(x, dtype=np.float32))
        with self._condition:
            self._pending.append(request)
            self._condition.notify_all()
            while True:
                if request.done:
                    break
                if self._running:
                    self._condition.wait()
                    continue
                # lead: gather companions for up to wait_s, then run everyone waiting
                self._running = True
                deadline = self._clock() + self.wait_s
                while len(self._pending) < self.max_batch:
                    left = deadline - self._clock()
                    if left <= 0:
                        break
                    self._condition.wait(left)
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                self._condition.release()
                try:
                    self._run(batch)
                finally:
                    self._condition.acquire()
                    self._running = False
                    self._condition.notify_all()
        if request.error is not None:
            raise request.error
        return request.result

    def _run(self, batch: list[_Request]) -> None:
        n = len(batch)
        size = n if self.sizes is None else next(s for s in self.sizes if s >= n)
        stacked = np.zeros((size, *batch[0].x.shape), dtype=np.float32)
        for i, request in enumerate(batch):
            stacked[i] = request.x
        try:
            out = np.asarray(self._forward(stacked))
            self.batch_sizes.append(n)
            for i, request in enumerate(batch):
                request.result = np.array(out[i], dtype=np.float32)  # own copy of its row
        except BaseException as exc:  # every caller of this batch hears about it
            for request in batch:
                request.error = exc
        finally:
            for request in batch:
                request.done = True
