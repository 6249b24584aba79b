"""The split's memory between runs: which content went to which split.

It lives under the artifacts root, beside the artifacts it explains, because CI often runs
`dagster job execute` on a throwaway instance whose history is gone by the next run. There is
one ledger file per split setting (seed, fractions, near-duplicate distance), and `in_use.json`
names the one the last run used, so that changing a setting is a visible, counted re-draw. A
file lock makes read-assign-write one step when runs overlap."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from filelock import FileLock

from bcc_pipeline.data.split import (
    CARRIED_OVER,
    LEDGER_COLUMNS,
    SPLITS,
    SplitResult,
    stratified_group_split,
)
from bcc_pipeline.storage import write_json, write_parquet

IN_USE_FILE = "in_use.json"


class LedgerError(RuntimeError):
    """The stored assignment cannot be trusted; the message says how to go on."""


@dataclass(frozen=True)
class LedgeredSplit:
    result: SplitResult
    ledger_path: Path
    carried_over: int
    """Images whose content had a split before (byte-identical new copies included)."""
    newly_assigned: int
    """Images of new content that got a split in this run."""
    moved: int
    """Images whose split differs from the ledger the last run used: 0 unless the split
    settings changed (a deliberate re-draw)."""
    redrawn: bool
    """The split settings changed since the last run: a fresh split on purpose."""
    basis: str
    """Where the split came from, in one sentence."""


def ledger_name(seed: int, fractions: dict[str, float], near_duplicate_distance: int) -> str:
    """File name of the ledger of one split setting, readable by a person."""
    shares = "_".join(f"{name}{fractions[name]:g}" for name in SPLITS)
    return f"seed{seed}_{shares}_near{near_duplicate_distance}.parquet"


def _how_to_go_on(folder: Path) -> str:
    return (
        f"restore it from a backup, or delete {folder} to start a fresh split on purpose "
        "(images may then change split)"
    )


def read_ledger(path: Path) -> pd.DataFrame:
    """The stored assignment; a clear error when it is damaged."""
    how_to_go_on = _how_to_go_on(path.parent)
    try:
        ledger = pd.read_parquet(path)
    except FileNotFoundError:
        raise LedgerError(
            f"the split ledger {path} named in {IN_USE_FILE} is missing; {how_to_go_on}"
        ) from None
    except Exception as err:  # pyarrow reports a damaged file in many ways
        raise LedgerError(
            f"the split ledger {path} is unreadable ({err}); {how_to_go_on}"
        ) from None
    problems = []
    if missing := set(LEDGER_COLUMNS) - set(ledger.columns):
        problems.append(f"columns {sorted(missing)} missing")
    elif not ledger["split"].isin(SPLITS).all():
        problems.append(f"splits other than {SPLITS}")
    elif ledger["sha256"].duplicated().any():
        problems.append("a digest listed twice")
    if problems:
        raise LedgerError(f"the split ledger {path} is damaged ({problems[0]}); {how_to_go_on}")
    return ledger


def _ledger_in_use(pointer: Path) -> str | None:
    """Name of the ledger the last run used, or None before the first run."""
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())["ledger"]
    except (ValueError, KeyError, TypeError) as err:
        raise LedgerError(
            f"{pointer} is damaged ({type(err).__name__}: {err}); {_how_to_go_on(pointer.parent)}"
        ) from None
    if not isinstance(name, str) or Path(name).name != name:
        raise LedgerError(f"{pointer} names {name!r}, not a ledger file beside it")
    return name


def split_with_ledger(
    manifest: pd.DataFrame,
    fractions: dict[str, float],
    seed: int,
    near_duplicate_distance: int,
    folder: Path,
    run_id: str,
) -> LedgeredSplit:
    """Split `manifest` keeping every image the ledger of these settings knows where it was,
    then record the new assignment. near_duplicate_distance -1 groups identical files only."""
    folder.mkdir(parents=True, exist_ok=True)
    name = ledger_name(seed, fractions, near_duplicate_distance)
    path = folder / name
    pointer = folder / IN_USE_FILE
    # The OS drops the lock with its process, so a killed run never leaves it held.
    with FileLock(folder / ".lock"):
        in_use = _ledger_in_use(pointer)
        previous = read_ledger(path) if path.exists() or in_use == name else None
        settings_changed = in_use is not None and in_use != name
        reference = read_ledger(folder / in_use) if settings_changed else previous
        result = stratified_group_split(
            manifest, fractions, seed, near_duplicate_distance, previous
        )
        write_parquet(path, result.ledger)
        write_json(
            pointer,
            {
                "ledger": name,
                "run_id": run_id,
                "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )

    table = result.table
    carried = int((table["assignment"] == CARRIED_OVER).sum())
    if reference is None:
        moved, basis = 0, f"first split with these settings: no ledger under {folder} yet"
    else:
        before = table["sha256"].map(reference.set_index("sha256")["split"])
        moved = int((before.notna() & (before != table["split"])).sum())
        if not settings_changed:
            basis = f"carried over from the ledger {name}"
        else:
            basis = (
                f"RE-DRAWN on purpose: the split settings changed from {in_use} to {name}; "
                f"{moved} images changed split"
            )
    return LedgeredSplit(
        result=result,
        ledger_path=path,
        carried_over=carried,
        newly_assigned=len(table) - carried,
        moved=moved,
        redrawn=settings_changed,
        basis=basis,
    )
