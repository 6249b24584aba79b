"""Work over many files on every core. Threads stop scaling early here: hashing, decoding and
hashing pixels hold the GIL often enough that 16 threads ran slower than 2 (issue 10). Separate
processes scale; they cost time to start, so small jobs stay in this process."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing.context import BaseContext
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


FORK_SERVER = "forkserver" in multiprocessing.get_all_start_methods()
"""Whether this platform has a fork server (Linux and macOS do, Windows does not)."""


def process_context(function: Callable) -> BaseContext:
    """How worker processes start. Never by forking this process: the caller may run threads,
    as a Dagster run does, and a forked child can inherit a lock no thread will ever release.
    Where the platform has one, a fork server (see start_worker_server), so a pool starts in
    milliseconds instead of every worker importing numpy, pandas and Pillow again (0.5 s a
    pool on 2 cores, measured). Elsewhere, fresh interpreters."""
    if not FORK_SERVER:
        return multiprocessing.get_context("spawn")
    while isinstance(function, partial):
        function = function.func
    start_worker_server(function.__module__)
    return multiprocessing.get_context("forkserver")


def start_worker_server(*modules: str) -> None:
    """Start the fork server, a fresh single-threaded process that imports `modules` (those of
    the functions to map) once and forks each worker from itself. Called early by a caller with
    other work in the coming seconds, the first pool then finds it ready. The modules are read
    once per process, when the server starts; a later pool's module is imported in each of its
    workers, as a spawned worker would. "__main__": a script run by path (the `dagster`
    command, say) is imported once by the server, not again by every worker."""
    if not FORK_SERVER:
        return
    from multiprocessing import forkserver  # Unix only

    forkserver.set_forkserver_preload(["__main__", *modules])
    forkserver.ensure_running()


def parallel_map(
    function: Callable[[T], R], items: Sequence[T], workers: int | None = None
) -> list[R]:
    """`function` over `items`, results in order. With several workers and enough items, on a
    pool of worker processes (see process_context); `function` and the items must pickle."""
    workers = min(worker_count(workers), max(1, len(items) // MIN_ITEMS_PER_PROCESS))
    if workers == 1:
        return [function(item) for item in items]
    chunk = max(1, len(items) // (workers * 8))
    with ProcessPoolExecutor(max_workers=workers, mp_context=process_context(function)) as pool:
        return list(pool.map(function, items, chunksize=chunk))
