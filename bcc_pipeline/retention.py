"""Retention: old run folders are deleted when new ones are made, so that a weekly retrain does
not fill the disk. Only folders named like a Dagster run id are candidates; anything else an
asset keeps beside its runs (a ledger, a pointer) is never touched."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from pathlib import Path

from bcc_pipeline.storage import is_locked

RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
LIVE_RUNS = ".live_runs"
"""Under the artifacts root: one empty lock file per run, locked while a process of the run
lives."""
_held: dict[Path, int] = {}
"""The run locks this process holds, by file, each for as long as the process lives."""


def hold_run_lock(root: Path, run_id: str) -> None:
    """Mark `run_id` live under `root` for as long as this process lives, so that pruning by
    other runs (other Dagster instances sharing the root, say) spares its folders. The OS drops
    the lock when the process ends, however it ends."""
    path = root / LIVE_RUNS / f"{run_id}.lock"
    if path in _held:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    fcntl.flock(descriptor, fcntl.LOCK_SH)
    _held[path] = descriptor


def is_live(root: Path, run_id: str) -> bool:
    """Whether a process of `run_id` holds its lock under `root` (see hold_run_lock). The lock
    file stays when the run ends: a step of the run starting now may be opening it."""
    return is_locked(root / LIVE_RUNS / f"{run_id}.lock")


def prune_old_entries(
    folder: Path, keep: int, spare: str | None = None, runs_only: bool = True
) -> list[Path]:
    """Delete all but the `keep` most recently modified sub-folders of `folder` (the one named
    `spare` always stays and counts); keep 0 deletes nothing. Run folders of a live run (see
    hold_run_lock; `folder` is then `<root>/<asset>`) stay too. Returns what was deleted."""
    if keep <= 0 or not folder.is_dir():
        return []
    candidates = [
        path
        for path in folder.iterdir()
        if path.is_dir()
        and path.name != spare
        and not path.name.startswith(".")
        and (RUN_ID.match(path.name) or not runs_only)
    ]
    candidates.sort(key=lambda path: path.stat().st_mtime, reverse=True)
    doomed = candidates[keep - 1 if spare else keep :]
    if runs_only:
        doomed = [path for path in doomed if not is_live(folder.parent, path.name)]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed
