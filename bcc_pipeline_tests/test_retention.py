import os
import subprocess
import sys
import uuid
from pathlib import Path

from bcc_pipeline.resources import ArtifactsResource


def _run_folders(parent: Path, count: int) -> list[Path]:
    """Run folders, oldest first, each one second older than the next."""
    folders = []
    for age in range(count, 0, -1):
        folder = parent / str(uuid.UUID(int=age))
        folder.mkdir(parents=True)
        (folder / "model.pt").write_bytes(b"x")
        os.utime(folder, (1_000_000 - age, 1_000_000 - age))
        folders.append(folder)
    return folders


def test_a_new_run_folder_deletes_the_oldest_beyond_keep_runs(tmp_path):
    old = _run_folders(tmp_path / "vit_checkpoint", 5)
    ledger = tmp_path / "vit_checkpoint" / "ledger"
    ledger.mkdir()
    new = ArtifactsResource(root=str(tmp_path), keep_runs=3).run_dir(
        "vit_checkpoint", str(uuid.uuid4())
    )
    remaining = {p for p in (tmp_path / "vit_checkpoint").iterdir()}
    assert remaining == {new, ledger, old[-1], old[-2]}


def test_keep_runs_zero_keeps_everything(tmp_path):
    old = _run_folders(tmp_path / "vit_checkpoint", 4)
    ArtifactsResource(root=str(tmp_path), keep_runs=0).run_dir("vit_checkpoint", "new")
    assert all(folder.exists() for folder in old)


def test_the_production_model_is_never_pruned(tmp_path):
    old = _run_folders(tmp_path / "production_model", 4)
    ArtifactsResource(root=str(tmp_path), keep_runs=1).run_dir(
        "production_model", str(uuid.uuid4())
    )
    assert all(folder.exists() for folder in old)


def test_feature_stores_keep_the_most_recently_used(tmp_path):
    stores = tmp_path / "cache" / "features"
    for age, key in enumerate(["newest", "middle", "oldest"]):
        (stores / key).mkdir(parents=True)
        os.utime(stores / key, (1_000_000 - age, 1_000_000 - age))
    ArtifactsResource(root=str(tmp_path), keep_runs=2).store_dir("features")
    assert {p.name for p in stores.iterdir()} == {"newest", "middle"}


def test_the_folders_of_a_run_still_going_are_spared_whatever_their_age(tmp_path):
    """A run of another Dagster instance on the same root: its tensors must outlive a prune
    that its age alone would doom, until its process is gone."""
    old = _run_folders(tmp_path / "preprocessed_tensors", 3)
    live_run = old[0].name
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_RUN_LOCK, str(tmp_path), live_run],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "holding\n"
        artifacts = ArtifactsResource(root=str(tmp_path), keep_runs=1)
        artifacts.run_dir("preprocessed_tensors", str(uuid.uuid4()))
        assert old[0].is_dir() and not old[1].exists() and not old[2].exists()
    finally:
        holder.kill()
        holder.wait()
    artifacts.run_dir("preprocessed_tensors", str(uuid.uuid4()))
    assert not old[0].exists(), "once its process is gone, the run's folders are pruned"


HOLD_A_RUN_LOCK = """
import sys, time
from pathlib import Path
from bcc_pipeline.retention import hold_run_lock
hold_run_lock(Path(sys.argv[1]), sys.argv[2])
print("holding", flush=True)
time.sleep(600)
"""
