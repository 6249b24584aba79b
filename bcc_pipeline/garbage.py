"""Garbage collection in a process that executes a run.

CPython's full collection walks every tracked object, and once torch, torchvision, Lightning,
MLflow and Dagster are imported that is over half a million objects, nearly all of them
modules' functions and classes that live as long as the process: each full collection took
0.3-0.45 s in a run here. Two moments make many of them: importing the deep-learning stack
(a full collection each time the heap grows by a quarter) and exiting."""

from __future__ import annotations

import atexit
import gc
import importlib
import sys
from functools import cache


def import_frozen(*modules: str) -> None:
    """Import `modules` with automatic collection paused, then move every object alive to the
    permanent generation (gc.freeze), which later collections skip. A run calls it where it
    first needs torch and torchvision (the launch check) and Lightning (training, or the
    launch check when it asks Lightning about a strategy). Before,
    the full collections from the launch check on took 2.0 s: four while it imported torch
    (0.8 s), one while MLflow's store opened, one during Lightning's import and one after
    training (0.35-0.44 s each), each walking every object imported so far; now 0.17 s
    (benchmarks/results/bench_collections*.txt). The gc documentation suggests the same
    pause and freeze before forking workers. No collection precedes the freeze (it would walk
    everything once more): what is garbage by then, some ten thousand objects from the run's
    set-up, stays until the process exits (at 1200 images the peak RSS was the same with a
    collection as without). Where the modules are imported already nothing happens, so a
    long-lived process (a test session) keeps collecting what it makes later."""
    if all(name in sys.modules for name in modules):
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        if was_enabled:
            gc.enable()
    gc.freeze()


@cache
def skip_final_garbage_collection() -> None:
    """At exit, move every object to the permanent generation (gc.freeze) before the final
    collections, which then skip them; the operating system frees the memory (a run process
    spent 2 s exiting, 0.3 s once frozen). What Python skips is calling __del__ on objects
    left in cycles at exit, which it never promises to do (nothing the pipeline writes relies
    on it: every file is closed before its step ends). Only the exit changes. Registered once
    per process."""
    atexit.register(gc.freeze)
