import os

import numpy as np
import pandas as pd

from bcc_pipeline.data import parallel
from bcc_pipeline.data.manifest import scan_folder
from bcc_pipeline.data.split import SPLITS, split_fingerprint, stratified_group_split
from bcc_pipeline.data.tensors import TensorSplits, write_tensor_splits
from bcc_pipeline_tests.conftest import FRACTIONS


def test_results_come_back_in_order_from_several_processes(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_ITEMS_PER_PROCESS", 10)
    items = list(range(-100, 0))
    assert parallel.parallel_map(abs, items, workers=2) == [abs(i) for i in items]


def parent_pid(_: int) -> int:
    return os.getppid()


def test_every_pool_forks_its_workers_from_one_server_not_from_this_process(monkeypatch):
    """The server imports the work's modules once; a forked copy of a run (which holds
    threads) could inherit a lock that nobody releases."""
    monkeypatch.setattr(parallel, "MIN_ITEMS_PER_PROCESS", 10)
    first = set(parallel.parallel_map(parent_pid, list(range(40)), workers=2))
    second = set(parallel.parallel_map(parent_pid, list(range(40)), workers=2))
    assert len(first) == 1 and first == second
    assert os.getpid() not in first


def test_few_items_stay_in_this_process(monkeypatch):
    """A function that cannot be pickled works only where no process is started."""
    items = list(range(parallel.MIN_ITEMS_PER_PROCESS))
    assert parallel.parallel_map(lambda i: i * 2, items, workers=4) == [i * 2 for i in items]


def test_two_processes_scan_and_decode_exactly_as_one(sample_root, tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_ITEMS_PER_PROCESS", 8)
    alone, shared = scan_folder(sample_root, workers=1), scan_folder(sample_root, workers=2)
    pd.testing.assert_frame_equal(alone, shared)
    table = stratified_group_split(shared, FRACTIONS, seed=0).table
    for workers in (1, 2):
        write_tensor_splits(
            table, sample_root, tmp_path / str(workers), 32, split_fingerprint(table), workers
        )
    one, two = TensorSplits.open(tmp_path / "1"), TensorSplits.open(tmp_path / "2")
    for split in SPLITS:
        np.testing.assert_array_equal(np.asarray(one.images(split)), np.asarray(two.images(split)))
