import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bcc_pipeline.resources import ArtifactsResource
from bcc_pipeline.storage import (
    DiskFullError,
    UnwritableDirError,
    allocated_npy,
    atomic_path,
    check_writable_dir,
    remove_stale_temp_files,
    write_json,
    write_parquet,
    write_text,
)
from bcc_pipeline_tests.conftest import small_disk

DAY = 24 * 3600


def _age(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def _old_file(path: Path, days: float = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"left behind")
    return _age(path, days * DAY)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_artifacts_get_the_mode_the_umask_gives_new_files(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        written = [
            write_json(tmp_path / "current.json", {"a": 1}),
            write_text(tmp_path / "report.md", "# report"),
            write_parquet(tmp_path / "manifest.parquet", pd.DataFrame({"a": [1]})),
        ]
        with atomic_path(tmp_path / "model.pt") as tmp:
            tmp.write_bytes(b"weights")
        written.append(tmp_path / "model.pt")
    finally:
        os.umask(previous)
    assert {stat.S_IMODE(path.stat().st_mode) for path in written} == {mode}


def test_a_failed_write_leaves_neither_the_artifact_nor_a_temp_file(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "model.pt") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_below_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(UnwritableDirError) as error:
        check_writable_dir(tmp_path / "taken" / "artifacts")
    assert str(error.value) == (
        f"cannot write to {tmp_path / 'taken' / 'artifacts'}: "
        f"{tmp_path / 'taken'} is a file, not a folder"
    )


def test_no_permission_is_a_clear_error(tmp_path, monkeypatch):
    # Simulated: the tests may run as root, whom file modes do not stop.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.TemporaryFile", refuse)
    with pytest.raises(UnwritableDirError, match=f"no permission to write in {tmp_path}$"):
        check_writable_dir(tmp_path)


def test_run_dir_under_a_file_is_a_clear_error_not_a_not_a_directory_error(tmp_path):
    (tmp_path / "root").write_text("")
    artifacts = ArtifactsResource(root=str(tmp_path / "root" / "artifacts"))
    with pytest.raises(UnwritableDirError, match="root is a file, not a folder"):
        artifacts.run_dir("raw_image_manifest", "run1")


def test_stale_temp_files_of_dead_runs_are_removed_and_live_ones_kept(tmp_path):
    dead_run, live_run = tmp_path / "vit_checkpoint" / "dead", tmp_path / "vit_checkpoint" / "live"
    old_temp = _old_file(tmp_path / "production_model" / ".current.json.0a1b.tmp")
    work = dead_run / ".work-abc123"
    _old_file(work / "features.npy")
    _age(work, 2 * DAY)
    recent_temp = _old_file(dead_run / ".model.pt.ffff.tmp", days=0.5)
    live_run_temp = _old_file(live_run / ".model.pt.eeee.tmp")
    artifact = _old_file(dead_run / "model.pt")

    removed = remove_stale_temp_files(tmp_path, DAY, active_run_ids={"live"})

    assert sorted(removed) == sorted([old_temp, work])
    assert not old_temp.exists() and not work.exists()
    assert recent_temp.exists() and live_run_temp.exists() and artifact.exists()


def test_a_work_folder_with_a_recent_file_is_kept(tmp_path):
    work = tmp_path / "vit_checkpoint" / "run" / ".work-abc123"
    _old_file(work / "old.npy")
    _old_file(work / "cache" / "recent.npy", days=0.1)
    _age(work, 2 * DAY)
    assert remove_stale_temp_files(tmp_path, DAY) == []


def _hold(code: str, argument: Path) -> subprocess.Popen:
    """A process that runs `code` (which prints a path, then sleeps) with `argument`."""
    return subprocess.Popen(
        [sys.executable, "-c", f"import sys, time\n{code}", str(argument)],
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    "code",
    [
        "from bcc_pipeline.storage import atomic_path\n"
        "with atomic_path(sys.argv[1] + '/train_images.npy') as tmp:\n"
        "    tmp.write_bytes(b'pixels'); print(tmp, flush=True); time.sleep(60)\n",
        "from bcc_pipeline.storage import work_dir\n"
        "with work_dir(sys.argv[1]) as folder:\n"
        "    (folder / 'cache.npy').write_bytes(b'x'); print(folder, flush=True); time.sleep(60)\n",
    ],
    ids=["atomic_path", "work_dir"],
)
def test_an_entry_in_use_by_a_live_process_is_kept_until_it_is_killed(tmp_path, code):
    run = tmp_path / "vit_checkpoint" / "run"
    run.mkdir(parents=True)
    process = _hold(code, run)
    try:
        entry = Path(process.stdout.readline().strip())
        for path in [entry, *entry.rglob("*")]:
            _age(path, 2 * DAY)
        assert remove_stale_temp_files(tmp_path, DAY) == []
        assert entry.exists(), "a live process's entry survives however old it looks"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert entry.exists(), "SIGKILL leaves it behind"
    assert remove_stale_temp_files(tmp_path, DAY) == [entry]
    assert list(run.iterdir()) == []


def test_an_allocated_npy_holds_its_blocks_before_anything_is_written(tmp_path):
    """numpy's open_memmap alone makes a sparse file: no blocks until pages are written."""
    array = allocated_npy(tmp_path / "x.npy", np.uint8, (4, 1024, 1024))
    status = os.stat(tmp_path / "x.npy")
    assert status.st_blocks * 512 >= status.st_size >= 4 * 2**20
    assert array.shape == (4, 1024, 1024) and array.dtype == np.uint8


def test_no_room_for_an_allocated_npy_is_a_disk_full_error_naming_the_room(tmp_path, monkeypatch):
    def full_disk(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full_disk)
    with pytest.raises(DiskFullError, match=r"no room on the disk for a 4 MiB file") as caught:
        allocated_npy(tmp_path / "x.npy", np.uint8, (4, 1024, 1024))
    assert caught.value.errno == errno.ENOSPC
    assert f"in {tmp_path} (" in str(caught.value) and "MiB free" in str(caught.value)
    assert "resources.artifacts.config.root" in str(caught.value)


@pytest.mark.parametrize(
    ("raised", "free", "said"),
    [
        (RuntimeError("unexpected pos 576 vs 534"), 0, True),  # torch.save, disk full
        (OSError(errno.ENOSPC, "No space left on device"), 10 * 2**30, True),
        (RuntimeError("unexpected pos 576 vs 534"), 10 * 2**30, False),  # not for want of room
    ],
)
def test_a_write_that_fails_for_want_of_room_is_said_as_disk_full(
    tmp_path, monkeypatch, raised, free, said
):
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real_usage(path)._replace(free=free))
    with (
        pytest.raises(DiskFullError if said else type(raised)) as caught,
        atomic_path(tmp_path / "model.pt"),
    ):
        raise raised
    if said:
        assert f"the disk filled up while writing in {tmp_path}" in str(caught.value)
        assert caught.value.__cause__ is raised
    assert list(tmp_path.iterdir()) == []


FILL_A_SMALL_DISK = {
    "memory-mapped": """
import sys
import numpy as np
from bcc_pipeline.storage import DiskFullError, allocated_npy
try:
    allocated_npy(sys.argv[1], np.uint8, (16, 1024, 1024))[:] = 1
except DiskFullError as err:
    print(err)
""",
    "torch.save": """
import sys
import torch
from bcc_pipeline.storage import DiskFullError, atomic_path
try:
    with atomic_path(sys.argv[1]) as tmp:
        torch.save({"weights": torch.zeros(4 * 2**20)}, tmp)
except DiskFullError as err:
    print(err)
""",
}


@pytest.mark.parametrize("writer", FILL_A_SMALL_DISK)
def test_a_full_disk_is_an_error_not_a_killed_process(tmp_path, writer):
    """On a 4 MiB tmpfs (needs root; skipped elsewhere): a write into a sparse file there is
    SIGBUS, and torch.save says "unexpected pos". Run in a child, which a signal would kill."""
    with small_disk(tmp_path / "small", "4m") as disk:
        child = subprocess.run(
            [sys.executable, "-c", FILL_A_SMALL_DISK[writer], str(disk / "file")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert child.returncode == 0, f"exit {child.returncode}: {child.stderr}"
    said = {
        "memory-mapped": "no room on the disk for a 16 MiB file",
        "torch.save": f"the disk filled up while writing in {disk}",
    }
    assert said[writer] in child.stdout
