"""Retention: old run folders are deleted when new ones are made, so that a weekly retrain does
not fill the disk. Only folders named like a Dagster run id are candidates; anything else an
asset keeps beside its runs (a ledger, a pointer) is never touched."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def prune_old_entries(
    folder: Path, keep: int, spare: str | None = None, runs_only: bool = True
) -> list[Path]:
    """Delete all but the `keep` most recently modified sub-folders of `folder` (the one named
    `spare` always stays and counts); keep 0 deletes nothing. Returns what was deleted."""
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
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed
