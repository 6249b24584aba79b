"""Atomic writes: a killed run leaves a temp file at worst, never a half-written artifact; the
temp files of dead runs are found and removed; folders that cannot be written are said early."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

TEMP_SUFFIX = ".tmp"
WORK_DIR_PREFIX = ".work-"
"""Prefix of the scratch folders a training run keeps beside its checkpoint."""


class UnwritableDirError(ValueError):
    """A folder the pipeline must write to cannot be created or written; the message names the
    folder and the cause."""


ROOM_FIX = "free space there, or set resources.artifacts.config.root to a disk with room"
NO_ROOM_LEFT_BYTES = 2**20
"""A write that failed with less than this free on its disk failed for want of room."""


class DiskFullError(OSError):
    """No room on the disk for a file the pipeline must write; the message names the file, the
    room it needs and the room there is."""


def allocated_npy(path: Path | str, dtype: np.dtype | type, shape: tuple[int, ...]) -> np.ndarray:
    """A new .npy file mapped for writing (numpy's open_memmap), with its blocks reserved on
    the disk before anything is written. numpy makes a sparse file, and on a full disk a write
    into one of its holes raises nothing: the kernel kills the process (SIGBUS), so a Dagster
    run would die without a word. Reserved, a disk without the room is a DiskFullError now."""
    path = Path(path)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    _reserve_blocks(path)
    return array


def _reserve_blocks(path: Path) -> None:
    size = path.stat().st_size
    reserve = getattr(os, "posix_fallocate", None)  # macOS has none
    if reserve is not None:
        fd = os.open(path, os.O_RDWR)
        try:
            reserve(fd, 0, size)
            return
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise _no_room(path, size) from None
            if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
        finally:
            os.close(fd)
    # This disk cannot reserve blocks: at least see that the room is there now.
    if shutil.disk_usage(path.parent).free < size:
        raise _no_room(path, size)


def _no_room(path: Path, size: int) -> DiskFullError:
    free = shutil.disk_usage(path.parent).free
    return DiskFullError(
        errno.ENOSPC,
        f"no room on the disk for a {size / 2**20:,.0f} MiB file in {path.parent} "
        f"({free / 2**20:,.0f} MiB free); {ROOM_FIX}",
    )


@contextmanager
def full_disk_said(folder: Path | str) -> Iterator[None]:
    """Writes into `folder` in the block: a disk that fills up becomes a DiskFullError naming
    the folder, whatever the writer raised (torch.save says only "unexpected pos 576 vs 534",
    pyarrow "Error writing bytes to file"). The writer's own error stays chained to it."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        room = _free_bytes(Path(folder))
        said = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
        if not said and (room is None or room >= NO_ROOM_LEFT_BYTES):
            raise
        raise DiskFullError(
            errno.ENOSPC, f"the disk filled up while writing in {folder}; {ROOM_FIX}"
        ) from err


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def check_writable_dir(path: Path | str) -> None:
    """Create `path` if needed and prove that a file can be written in it, or raise
    UnwritableDirError naming the path and the cause (a file where a folder should be, no
    permission, a read-only disk), instead of a bare OSError from wherever the first write is."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UnwritableDirError(f"cannot write to {path}: {_why_unwritable(path, err)}") from None


def _why_unwritable(path: Path, err: OSError) -> str:
    existing = next(p for p in (path, *path.parents) if os.path.lexists(p))
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a folder"
    if isinstance(err, PermissionError):
        return f"no permission to write in {existing}"
    return err.strerror or str(err)


@contextmanager
def atomic_path(final: Path | str) -> Iterator[Path]:
    """Yield a temp path beside `final`; rename it onto `final` only if the block succeeds.

    The temp file is created with the mode the umask gives any new file (mkstemp's 0600 would
    hide artifacts from a serving process running as another user), and it stays locked while
    the block runs, so remove_stale_temp_files can tell a live writer's file from a dead run's."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{secrets.token_hex(8)}{TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with full_disk_said(final.parent):
            yield tmp
        os.replace(tmp, final)
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)


@contextmanager
def work_dir(parent: Path | str) -> Iterator[Path]:
    """A scratch folder `.work-*` in `parent`, removed afterwards. A lock held on a file inside
    it while it is in use tells remove_stale_temp_files that it is live, however long ago its
    files were written (a feature cache is written once, then read for hours)."""
    with tempfile.TemporaryDirectory(dir=parent, prefix=WORK_DIR_PREFIX) as folder:
        fd = os.open(Path(folder) / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with full_disk_said(folder):
                yield Path(folder)
        finally:
            os.close(fd)


STORE_COMPLETE = ".complete"
"""Written last into a content store: its presence means every file in it is whole."""


@contextmanager
def _filled_once(store: Path) -> Iterator[Path | None]:
    """A folder of content computed once for the key its name holds (a digest of everything
    the content depends on). Yields None when an earlier run completed it: use it as it is.
    Otherwise yields a private scratch folder for the block to fill; when the block succeeds,
    that folder is marked complete and renamed into place whole, so no reader ever sees half a
    store, and of two runs filling the same key at once the first one's stays."""
    if (store / STORE_COMPLETE).is_file():
        os.utime(store)  # used now: retention keeps the most recently used stores
        yield None
        return
    store.parent.mkdir(parents=True, exist_ok=True)
    with work_dir(store.parent) as scratch:  # locked while in use; a killed run's is cleaned
        partial = scratch / store.name
        partial.mkdir()
        yield partial
        (partial / STORE_COMPLETE).touch()
        if os.path.lexists(store) and not (store / STORE_COMPLETE).is_file():
            _set_aside(store)  # left by hand or by a tool (a file, say): never by this writer
        try:
            partial.rename(store)
        except OSError:  # another run completed the same key first: keep theirs
            if not (store / STORE_COMPLETE).is_file():
                raise


StoreContent = TypeVar("StoreContent")
DAMAGE_ERRORS = (ValueError, OSError, KeyError, TypeError)
"""What opening a store's files raises when one was cut short, deleted or overwritten (a
TypeError: a JSON file holding a list or null where its reader wants a mapping)."""


def reused_or_filled(
    store: Path,
    fill: Callable[[Path], None],
    open_store: Callable[[Path], StoreContent],
    warn: Callable[[str], None],
) -> tuple[StoreContent, bool]:
    """A content store opened, and whether an earlier run had filled it. `fill` writes the
    content into the folder it is given; `open_store` reads a folder and raises one of
    DAMAGE_ERRORS when its files do not add up. A store is only ever a cache of what can be
    computed again, so one an earlier run completed that no longer opens (a file cut short,
    deleted or overwritten since) is said, set aside and filled again, instead of failing every
    run on that content until someone deletes it."""

    def filled() -> bool:
        with _filled_once(store) as partial:
            if partial is not None:
                fill(partial)
        return partial is None

    reused = filled()
    if reused:
        try:
            return open_store(store), True
        except DAMAGE_ERRORS as err:
            warn(f"{store} is damaged ({type(err).__name__}: {err}); computing it again")
            _set_aside(store)
            reused = filled()
    return open_store(store), reused


def _set_aside(store: Path) -> None:
    """Take a store out of use at once (a rename: a run reading it keeps its open files), then
    delete it. Of two runs setting the same store aside, the second finds it gone."""
    with work_dir(store.parent) as scratch, suppress(FileNotFoundError):
        store.rename(scratch / store.name)


def link_files(source: Path, target: Path) -> None:
    """Give `target` every file of `source` (not its marker) as a hard link: no bytes copied,
    and the files outlive the store being pruned. A copy where the file system cannot link."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.name != STORE_COMPLETE:
            destination = target / path.name
            destination.unlink(missing_ok=True)
            try:
                os.link(path, destination)
            except OSError:
                shutil.copy2(path, destination)


def remove_stale_temp_files(
    root: Path | str, older_than_seconds: float, active_run_ids: Collection[str] = ()
) -> list[Path]:
    """Remove what killed runs left under an artifacts root, and return what was removed:
    atomic_path temp files (`.<name>.<random>.tmp`) and training scratch folders (`.work-*`).

    One is removed only when all of these hold, so a live run never loses a file:
    - nothing in it was modified for older_than_seconds;
    - no process holds a lock on it or a file in it, as atomic_path and work_dir do while in
      use (a lock dies with its process, so a killed run's files are never locked);
    - it is not inside the folder (`root/<asset>/<run_id>/`) of a run in active_run_ids."""
    root = Path(root)
    cutoff = time.time() - older_than_seconds
    removed = []
    for folder, dirs, names in os.walk(root):
        work_dirs = [name for name in dirs if name.startswith(WORK_DIR_PREFIX)]
        dirs[:] = [name for name in dirs if name not in work_dirs]
        temp_files = [n for n in names if n.startswith(".") and n.endswith(TEMP_SUFFIX)]
        for entry in (Path(folder) / name for name in work_dirs + temp_files):
            relative = entry.relative_to(root).parts
            if len(relative) > 2 and relative[1] in active_run_ids:
                continue
            inside = list(entry.rglob("*")) if entry.is_dir() else []
            if any(_modified_after(p, cutoff) or is_locked(p) for p in [entry, *inside]):
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            if not entry.exists():
                removed.append(entry)
    return removed


def _modified_after(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime > cutoff
    except FileNotFoundError:
        return False


def is_locked(path: Path) -> bool:
    """Whether some process holds a lock, shared or exclusive, on the file `path`. No such file
    (or a folder) is not locked; a file this process cannot open counts as locked, so that
    whatever asks leaves it alone."""
    if not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def write_json(path: Path | str, data: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return Path(path)


def write_text(path: Path | str, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_parquet(path: Path | str, frame: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(path)
