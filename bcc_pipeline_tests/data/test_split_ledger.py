import json
import threading

import pandas as pd
import pytest
from filelock import FileLock

from bcc_pipeline.data.manifest import scan_folder
from bcc_pipeline.data.split_ledger import (
    IN_USE_FILE,
    LedgerError,
    ledger_name,
    split_with_ledger,
)
from bcc_pipeline_tests.conftest import FRACTIONS


@pytest.fixture(scope="module")
def manifest(sample_root) -> pd.DataFrame:
    return scan_folder(sample_root)


def _split(manifest, folder, seed=0, fractions=FRACTIONS, run_id="run"):
    return split_with_ledger(manifest, fractions, seed, 6, folder, run_id)


def test_first_run_writes_the_ledger_and_names_it_in_use(manifest, tmp_path):
    split = _split(manifest, tmp_path, run_id="first")
    assert (split.carried_over, split.newly_assigned, split.moved) == (0, 90, 0)
    assert not split.redrawn and split.basis.startswith("first split")
    ledger = pd.read_parquet(split.ledger_path)
    assert split.ledger_path.name == ledger_name(0, FRACTIONS, 6)
    assert dict(zip(ledger["sha256"], ledger["split"], strict=True)) == dict(
        zip(split.result.table["sha256"], split.result.table["split"], strict=True)
    )
    assert json.loads((tmp_path / IN_USE_FILE).read_text())["ledger"] == split.ledger_path.name


def test_second_run_on_a_grown_folder_carries_over(manifest, tmp_path):
    first = _split(manifest.iloc[:60], tmp_path)
    second = _split(manifest, tmp_path)
    assert (second.carried_over, second.newly_assigned, second.moved) == (60, 30, 0)
    assert second.basis.startswith("carried over")
    old = first.result.table.set_index("path")["split"]
    assert second.result.table.set_index("path")["split"][old.index].equals(old)


def test_changed_seed_is_a_loud_redraw_that_counts_moved_images(manifest, tmp_path):
    first = _split(manifest, tmp_path, seed=0)
    redrawn = _split(manifest, tmp_path, seed=1)
    before = first.result.table.set_index("path")["split"]
    after = redrawn.result.table.set_index("path")["split"]
    assert redrawn.redrawn and redrawn.basis.startswith("RE-DRAWN")
    assert redrawn.moved == int((after != before[after.index]).sum()) > 0
    assert redrawn.carried_over == 0 and redrawn.ledger_path != first.ledger_path
    back = _split(manifest, tmp_path, seed=0)
    assert back.redrawn and back.carried_over == 90, "seed 0's ledger is still there"
    assert back.result.table.set_index("path")["split"].equals(before)


def test_changed_fractions_use_their_own_ledger(manifest, tmp_path):
    _split(manifest, tmp_path)
    other = _split(manifest, tmp_path, fractions={"train": 0.6, "val": 0.2, "test": 0.2})
    assert other.redrawn and other.ledger_path.name == ledger_name(
        0, {"train": 0.6, "val": 0.2, "test": 0.2}, 6
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda ledger, pointer: ledger.write_bytes(b"not parquet"), "unreadable"),
        (lambda ledger, pointer: ledger.unlink(), "missing"),
        (
            lambda ledger, pointer: pd.DataFrame(
                {"sha256": ["a"], "split": ["holdout"], "label": ["x"]}
            ).to_parquet(ledger),
            "damaged",
        ),
        (lambda ledger, pointer: pointer.write_text("{"), "damaged"),
    ],
)
def test_damaged_ledger_is_a_clear_error_and_nothing_is_rewritten(
    manifest, tmp_path, damage, message
):
    first = _split(manifest, tmp_path)
    pointer = tmp_path / IN_USE_FILE
    damage(first.ledger_path, pointer)
    kept = {path: path.read_bytes() for path in (first.ledger_path, pointer) if path.exists()}
    with pytest.raises(LedgerError, match=f"{message}.*delete {tmp_path}"):
        _split(manifest, tmp_path)
    assert {path: path.read_bytes() for path in kept} == kept


def test_a_run_waits_for_the_ledger_lock(manifest, tmp_path):
    done = threading.Event()

    def run() -> None:
        _split(manifest, tmp_path)
        done.set()

    with FileLock(tmp_path / ".lock"):
        worker = threading.Thread(target=run)
        worker.start()
        assert not done.wait(1.5), "the split must not read the ledger while another run writes"
        assert not (tmp_path / IN_USE_FILE).exists()
    worker.join(60)
    assert done.is_set()
