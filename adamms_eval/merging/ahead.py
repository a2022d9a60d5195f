"""Whole-tensor merges computed ahead of the writer on worker threads, handed out in the file's order.

TIES, DARE and vocabulary-aligned tensors are merged a whole tensor at a time, as many short torch and numpy
operations on 1 MB chunks. Run in one thread, torch's second OpenMP thread spins between those operations and
numpy's share runs on one core: on a 2-core machine a third of the CPU time of a TIES merge was spinning.
Here each worker thread merges its own tensors with one intra-op thread (OpenMP's thread count is per calling
thread), so both cores do useful work. Every tensor's merge depends only on that tensor (seeded per tensor),
so the bytes are those of the one-thread merge; the results are handed out in the order they are asked for.
One intra-op thread also makes the bytes independent of the machine's cores: torch splits a sum (DARE's l1
rescale) by its thread count, which moved a few entries by one ulp between 1 and 2 threads.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Hashable

import torch

WORKERS = 2
AHEAD_BYTES = 1 << 30  # results computed or waiting beyond the one being written; one larger tensor still goes alone


def _one_intra_op_thread() -> None:
    torch.set_num_threads(1)


class TensorsAhead:
    """compute(key) for each key of `order`, WORKERS at a time and at most AHEAD_BYTES ahead; `take(key)` in
    that order returns each result (re-raising what its computation raised)."""

    def __init__(self, order: list[tuple[Hashable, int]], compute: Callable[[Hashable], torch.Tensor],
                 workers: int | None = None, ahead_bytes: int | None = None):
        self.compute, self.ahead_bytes = compute, AHEAD_BYTES if ahead_bytes is None else ahead_bytes
        self.waiting = deque(order)
        self.keys = {k for k, _ in order}  # not yet taken
        self.started: deque[tuple[Hashable, int, Future]] = deque()
        self.pool = ThreadPoolExecutor(workers or WORKERS, thread_name_prefix="merge-ahead", initializer=_one_intra_op_thread)

    def __contains__(self, key) -> bool:
        return key in self.keys

    def _start(self) -> None:
        held = sum(n for _, n, _ in self.started)
        while self.waiting and (not self.started or held + self.waiting[0][1] <= self.ahead_bytes):
            key, n = self.waiting.popleft()
            self.started.append((key, n, self.pool.submit(self.compute, key)))
            held += n

    def take(self, key) -> torch.Tensor:
        self._start()
        if not self.started or self.started[0][0] != key:
            raise RuntimeError(f"{key} asked for out of order (next: {self.started[0][0] if self.started else None})")
        _, _, future = self.started.popleft()
        self.keys.discard(key)
        result = future.result()
        self._start()
        return result

    def close(self) -> None:
        """Drop what was not taken; a computation already running finishes first (it cannot be stopped)."""
        self.waiting.clear()
        self.keys.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.started.clear()

    def __enter__(self) -> "TensorsAhead":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
