"""Work over many files on every core. Threads stop scaling early here: hashing, decoding and
hashing pixels hold the GIL often enough that 16 threads ran slower than 2 (issue 10). Separate
processes scale; they cost a second or so to start, so small jobs stay in this process."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MIN_ITEMS_PER_PROCESS = 256
"""Below this many items per extra process, starting processes costs more than it saves."""


def worker_count(workers: int | None = None) -> int:
    """The processes to use: `workers`, else the cores this process may run on."""
    if workers:
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity API
        return os.cpu_count() or 1


def parallel_map(
    function: Callable[[T], R], items: Sequence[T], workers: int | None = None
) -> list[R]:
    """`function` over `items`, results in order. With several workers and enough items, on a
    pool of freshly spawned processes (never forked: the caller may run threads, as a Dagster
    run does, and a forked child can inherit a lock that no thread will ever release);
    `function` and the items must pickle."""
    workers = min(worker_count(workers), max(1, len(items) // MIN_ITEMS_PER_PROCESS))
    if workers == 1:
        return [function(item) for item in items]
    chunk = max(1, len(items) // (workers * 8))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(function, items, chunksize=chunk))
