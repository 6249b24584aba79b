"""Inventory of a data folder: one row per regular file, each either usable or rejected with a
reason, so that no input is silently lost."""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections import Counter, deque
from collections.abc import Sequence
from functools import partial
from pathlib import Path, PurePosixPath

import pandas as pd

from bcc_pipeline.data.images import (
    DEFAULT_MAX_FILE_BYTES,
    SYNTHETIC_MARK,
    UNREADABLE,
    ImageRejected,
    decode_image,
    perceptual_hash,
    read_image_file,
)
from bcc_pipeline.data.parallel import parallel_map

MANIFEST_COLUMNS = [
    "path",
    "label",
    "sha256",
    "bytes",
    "format",
    "width",
    "height",
    "mode",
    "phash",
    "status",
    "error",
    "synthetic",
]
OS_FILE_NAMES = frozenset({"thumbs.db", ".ds_store", "desktop.ini", "ehthumbs.db", "icon\r"})
METADATA_FOLDER_NAMES = frozenset(
    {"__macosx", "$recycle.bin", "system volume information", "#recycle", "#snapshot"}
)
"""Folders that operating systems, NAS boxes and tools keep beside data (besides those whose
name starts with `.` or `@`: .Trash-1000, .git, Synology's @eaDir thumbnails)."""
MAX_OUTSIDE_SHARE = 0.1
"""Found class folders that leave more than this share of the images outside them are a guess,
not a finding: the layout has more than one level of folders to choose from."""
HASH_DRAFT_SIZE = 128
OK, OS_FILE = "ok", "os_file"
"""A usable image; a file the operating system keeps (Thumbs.db, .DS_Store): not data."""
BAD_NAME, OUTSIDE_CLASS_FOLDERS = "bad_name", "outside_class_folders"


class DataFolderError(ValueError):
    """The data folder cannot yield a dataset; the message says how to fix it."""


def list_files(data_dir: Path) -> tuple[list[Path], dict[Path, str], dict[Path, str]]:
    """Every regular file beneath data_dir, sorted; the folders that could not be listed, with
    the reason (no permission, a shared drive gone); and the entries that are no regular file,
    with what they are (a link whose target is gone, a pipe).

    Links to folders are followed (class folders linked to shared storage) and their files keep
    the path seen beneath data_dir, which names their class. They are followed after the real
    folders, so that a folder reached twice (two links to it, a loop) is read once, where it
    really is, and its other paths are entries that say where; a folder that holds data_dir
    (a link to it or above it) is a loop too, and not followed."""
    found, unlistable, not_files = [], {}, {}
    read_at = {_folder_id(folder): folder for folder in data_dir.resolve().parents}
    tops = deque([data_dir])

    def note(err: OSError) -> None:
        unlistable[Path(err.filename)] = err.strerror or str(err)

    def first_visit(folder: Path) -> bool:
        identity = _folder_id(folder)
        if identity is None:  # gone since the listing: os.walk says why it cannot list it
            return True
        if identity in read_at:
            not_files[folder] = _read_elsewhere(folder, read_at[identity], data_dir)
            return False
        read_at[identity] = folder
        return True

    while tops:
        top = tops.popleft()
        if not first_visit(top):
            continue
        for folder, folders, names in os.walk(top, onerror=note):
            subfolders = [Path(folder) / name for name in sorted(folders)]
            tops.extend(path for path in subfolders if path.is_symlink())
            folders[:] = [
                path.name for path in subfolders if not path.is_symlink() and first_visit(path)
            ]
            for name in names:
                path = Path(folder) / name
                if path.is_file():
                    found.append(path)
                else:
                    not_files[path] = _what_is_not_a_file(path)
    return sorted(found), unlistable, not_files


def _folder_id(folder: Path) -> tuple[int, int] | None:
    """What names a folder whatever the path to it: its device and inode."""
    try:
        stat = folder.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _read_elsewhere(folder: Path, first: Path, data_dir: Path) -> str:
    """Why a folder reached a second time is not read: a loop, or where its files are listed."""
    if folder.is_symlink():
        what = f"a symbolic link to {printable(os.readlink(folder))}, a folder that"
    else:
        what = "a folder reached a second time (through a link, or mounted twice) that"
    if first in folder.parents or not first.is_relative_to(data_dir):
        return f"{what} holds this path: a loop; not followed"
    where = printable(first.relative_to(data_dir).as_posix())
    return f"{what} is read already as {where}/; not read again"


def _what_is_not_a_file(path: Path) -> str:
    if not path.is_symlink():
        return "not a regular file (a pipe, socket or device); not read"
    target = printable(os.readlink(path))
    try:
        path.stat()
    except FileNotFoundError:
        return f"a symbolic link to {target}, which does not exist (a drive not mounted?)"
    except OSError as err:  # ELOOP: it leads back to itself
        return f"a symbolic link to {target} that cannot be followed ({err.strerror})"
    return f"a symbolic link to {target}, which is not a regular file; not read"


def folder_fingerprint(data_dir: Path | str) -> str:
    """Digest of every file's name, size and mtime: cheap (no reads), changes with the data.
    Names are hashed as the bytes the OS gave, so names that are not UTF-8 count too."""
    data_dir = Path(data_dir)
    digest = hashlib.sha256()
    for path in list_files(data_dir)[0]:
        try:
            stat = path.stat()
        except OSError:  # removed since the listing; the next tick sees the folder as it is
            continue
        relative = path.relative_to(data_dir)
        digest.update(os.fsencode(f"{relative}\t{stat.st_size}\t{stat.st_mtime_ns}\n"))
    return digest.hexdigest()[:16]


def is_text(name: str) -> bool:
    """Whether a file name is valid Unicode. On Linux a name is any bytes; Python carries the
    bytes that are not UTF-8 (zips made on Windows, old shared drives) as lone surrogates."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(name: str) -> str:
    """A file name as valid UTF-8 for tables and logs: bytes that are not UTF-8 become \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def find_class_folders(
    data_dir: Path, files: list[Path], statuses: Sequence[str], named: Sequence[str] = ()
) -> dict[Path, str]:
    """Class folder -> label (its name). Files anywhere beneath a class folder belong to it.

    With `named` (paths relative to data_dir, or their last components: `brain_glioma`), exactly
    those folders. Otherwise the folders that directly hold the decoded images of the one folder
    whose sub-folders hold the most, and beside them every folder holding data files but no
    decodable image (a class of DICOMs must fail, not vanish). A stray image beside or above the
    class folders, or a few in a folder elsewhere, is reported as outside them; when more than
    MAX_OUTSIDE_SHARE of the images would be, the layout is ambiguous and the error says how to
    name the class folders."""
    if named:
        folders = _folders_below(data_dir, files)
        chosen = [_named_folder(data_dir, folders, name) for name in named]
    else:
        chosen = _found_class_folders(data_dir, files, statuses)
    classes = {folder: printable(folder.name) for folder in chosen}
    _refuse_look_alike_names(sorted(set(classes.values())))
    return classes


def _folders_below(data_dir: Path, files: list[Path]) -> list[Path]:
    """Every folder between data_dir and its files, data_dir left out. Walked up from each
    folder holding files (not from each file), stopping at one already seen: linear in the
    folders however many files they hold."""
    found: set[Path] = set()
    for held in {path.parent for path in files}:
        for folder in (held, *held.parents):
            if folder == data_dir or folder in found:
                break
            found.add(folder)
    return sorted(found)


def _found_class_folders(data_dir: Path, files: list[Path], statuses: Sequence[str]) -> list[Path]:
    images = [path for path, status in zip(files, statuses, strict=True) if status == OK]
    holding = Counter(path.parent for path in images if path.parent != data_dir)
    per_parent: Counter[Path] = Counter()
    for folder, count in holding.items():
        per_parent[folder.parent] += count
    if not per_parent:
        return []
    parent = min(per_parent, key=lambda folder: (-per_parent[folder], str(folder)))
    data_files = [p for p, status in zip(files, statuses, strict=True) if status != OS_FILE]
    chosen = sorted({path.parent for path in data_files if path.parent.parent == parent})
    in_a_class = dict.fromkeys(chosen, "class")
    outside = [path for path in images if not _class_of(path, in_a_class)]
    if len(outside) > MAX_OUTSIDE_SHARE * len(images):
        parents = ", ".join(
            f"{printable(folder.relative_to(data_dir).as_posix() or '.')}/ ({count})"
            for folder, count in per_parent.most_common(6)
        )
        raise DataFolderError(
            f"cannot tell which folders are the classes: the folders that hold images sit in "
            f"several places (images per place: {parents}), so taking those under one place "
            f"would leave {len(outside)} of {len(images)} images out, e.g. "
            f"{printable(outside[0].relative_to(data_dir).as_posix())!r}. Name the class "
            "folders in resources.dataset.config.class_folders: files anywhere beneath a named "
            "folder count (class/patient/slice layouts), and folders named alike in several "
            "places (Training/glioma, Testing/glioma) can each be named by their path and "
            "share their class."
        )
    return chosen


def _refuse_look_alike_names(labels: list[str]) -> None:
    """Labels that differ only in case, spaces or Unicode form are one class split in two (a
    folder renamed on another system) and would print alike in every report."""
    by_key: dict[str, list[str]] = {}
    for label in labels:
        key = unicodedata.normalize("NFKC", label).strip().casefold()
        by_key.setdefault(key, []).append(label)
    alike = [names for names in by_key.values() if len(names) > 1]
    if alike:
        raise DataFolderError(
            f"class folders {' and '.join(repr(name) for name in alike[0])} differ only in "
            "case, spaces or Unicode form: merge them into one folder, or rename one"
        )


def _named_folder(data_dir: Path, folders: list[Path], name: str) -> Path:
    """The folder `name` names: the one at exactly that path under data_dir, else the one
    whose path ends so. Metadata folders (__MACOSX and the like) are never named."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    folders = [f for f in folders if _metadata_folder(f.relative_to(data_dir).parts) is None]
    exact = [f for f in folders if f.relative_to(data_dir).parts == parts]
    matches = exact or [f for f in folders if f.relative_to(data_dir).parts[-len(parts) :] == parts]
    if len(matches) == 1:
        return matches[0]
    found = sorted(printable(f.relative_to(data_dir).as_posix()) for f in folders)
    if not matches:
        raise DataFolderError(
            f"class folder {name!r} (dataset class_folders) is not a folder holding files under "
            f"{printable(str(data_dir))!r}; those are {found[:20]}"
        )
    raise DataFolderError(
        f"class folder {name!r} (dataset class_folders) matches {len(matches)} folders: "
        f"{sorted(printable(f.relative_to(data_dir).as_posix()) for f in matches)}; "
        "give more of its path, relative to data_dir"
    )


def inspect_file(path: Path, data_dir: Path, max_file_bytes: int) -> dict:
    """One manifest row, without its label; every failure becomes a status, never an exception.

    A name that is not valid UTF-8 gets status bad_name rather than an escaped text form:
    parquet, JSON, the Dagster UI and MLflow all need UTF-8, and an escaped spelling would be a
    second name for the file that every downstream reader would have to decode. Its `path`
    shows the odd bytes as \\xNN, and renaming the file is the fix the error names."""
    relative = path.relative_to(data_dir).as_posix()
    row = dict.fromkeys(MANIFEST_COLUMNS)
    row.update(path=printable(relative), bytes=0, error="")
    if not is_text(relative):
        return {
            **row,
            "status": BAD_NAME,
            "error": "the file or folder name is not valid UTF-8 (made with another code page?); "
            "rename it, e.g. with `convmv -f cp1252 -t utf-8 -r --notest DIR`",
        }
    if path.name.lower() in OS_FILE_NAMES or path.name.startswith("._"):
        return {**row, "status": OS_FILE, "error": "operating-system metadata file"}
    folder = _metadata_folder(PurePosixPath(relative).parts[:-1])
    if folder is not None:
        return {
            **row,
            "status": OS_FILE,
            "error": f"inside {folder}, a folder an operating system, a NAS or a tool keeps",
        }
    try:
        row["bytes"] = path.stat().st_size
        data = read_image_file(path, max_file_bytes)
        row["sha256"] = hashlib.sha256(data).hexdigest()
        image = decode_image(data, draft_size=HASH_DRAFT_SIZE)
    except OSError as err:
        return {**row, "status": UNREADABLE, "error": f"cannot read the file: {err.strerror}"}
    except ImageRejected as err:
        return {**row, "status": err.status, "error": printable(str(err))}
    return {
        **row,
        "format": image.format,
        "width": image.width,
        "height": image.height,
        "mode": image.mode,
        "phash": perceptual_hash(image.rgb),
        "status": OK,
        "synthetic": image.comment == SYNTHETIC_MARK,
    }


def _metadata_folder(folders: Sequence[str]) -> str | None:
    """The first of these folder names that is not data but metadata, if any."""
    for name in folders:
        if name.startswith((".", "@")) or name.lower() in METADATA_FOLDER_NAMES:
            return name
    return None


def _class_of(path: Path, classes: dict[Path, str]) -> str:
    """The label of the class folder `path` lies beneath, at any depth; empty if none."""
    for folder in path.parents:
        if folder in classes:
            return classes[folder]
    return ""


def _label(row: dict, path: Path, classes: dict[Path, str]) -> dict:
    """The row with the label of its class folder; an image outside every class folder is
    rejected, saying where the classes are."""
    row = {**row, "label": _class_of(path, classes)}
    if row["status"] != OK or row["label"]:
        return row
    names = sorted(set(classes.values()))
    where = f"the class folders ({', '.join(names)})" if names else "a class folder"
    return {
        **row,
        "status": OUTSIDE_CLASS_FOLDERS,
        "error": f"image is not inside {where}; move it into one, or name the class "
        "folders in dataset class_folders",
    }


def missing_data_dir(data_dir: Path) -> str:
    """What to do about a data folder that is not there."""
    return (
        f"data folder {printable(str(data_dir))!r} does not exist. Download the Kaggle 'Brain "
        "Cancer - MRI dataset' (doi:10.17632/mk56jw9rns.1) and unzip it there, or generate a "
        "synthetic sample with `bcc-pipeline sample-data DIR`; then set data_dir (or "
        "BCC_DATA_DIR)."
    )


def scan_folder(
    data_dir: Path | str,
    workers: int | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    class_folders: Sequence[str] = (),
) -> pd.DataFrame:
    """Manifest of data_dir, one row per regular file, sorted by path; files are read on every
    core (see parallel_map). sha256 is empty for files rejected from their name, size or first
    bytes: they are not read."""
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise DataFolderError(missing_data_dir(data_dir))
    files, unlistable, not_files = list_files(data_dir)
    if data_dir in unlistable:
        raise DataFolderError(
            f"cannot list data_dir {printable(str(data_dir))!r}: {unlistable[data_dir]}"
        )
    if not files and not unlistable and not not_files:
        raise DataFolderError(f"data_dir {printable(str(data_dir))!r} is empty: no files to read")
    rows = parallel_map(
        partial(inspect_file, data_dir=data_dir, max_file_bytes=max_file_bytes), files, workers
    )
    statuses = [row["status"] for row in rows]
    classes = find_class_folders(data_dir, files, statuses, class_folders)
    rows = [_label(row, path, classes) for path, row in zip(files, rows, strict=True)]
    rows += [
        _unreadable_row(
            f"{folder.relative_to(data_dir).as_posix()}/",
            f"cannot list this folder ({why}): the files in it are not in the manifest",
        )
        for folder, why in unlistable.items()
    ]
    rows += [
        _unreadable_row(path.relative_to(data_dir).as_posix(), what)
        for path, what in not_files.items()
    ]
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    manifest["bytes"] = manifest["bytes"].astype("int64")
    for column in ("width", "height"):
        manifest[column] = manifest[column].astype("Int64")
    for column in ("label", "sha256", "format", "mode", "phash", "status", "error"):
        manifest[column] = manifest[column].fillna("").astype(str)
    manifest["synthetic"] = manifest["synthetic"].eq(True)  # rows that are no image: False
    return manifest.sort_values("path", ignore_index=True)


def _unreadable_row(relative: str, error: str) -> dict:
    """What cannot be read as a file (a folder that cannot be listed, a dangling link) is a row
    of its own, so that nothing is lost without a word."""
    row = dict.fromkeys(MANIFEST_COLUMNS)
    return {**row, "path": printable(relative), "bytes": 0, "status": UNREADABLE, "error": error}


def require_usable(manifest: pd.DataFrame, data_dir: Path | str) -> None:
    """Stop with a clear message when the folder cannot train a classifier at all."""
    usable = manifest[manifest["status"] == OK]
    if usable.empty:
        statuses = manifest["status"].value_counts()
        example = manifest[manifest["status"] == statuses.index[0]].iloc[0]
        where = (
            " Images must sit in one folder per class, e.g. brain_glioma/*.jpg."
            if OUTSIDE_CLASS_FOLDERS in statuses
            else ""
        )
        raise DataFolderError(
            f"no readable images under {printable(str(data_dir))!r} ({len(manifest)} files: "
            f"{statuses.to_dict()}; e.g. {example['path']!r}: {example['error']}).{where}"
        )
    classes = sorted(set(manifest["label"]) - {""})
    without_images = [label for label in classes if label not in set(usable["label"])]
    if without_images:
        label = without_images[0]
        rows = manifest[manifest["label"] == label]
        raise DataFolderError(
            f"class folder {label!r} holds {len(rows)} files but no readable image "
            f"({rows['status'].value_counts().to_dict()}; e.g. {rows['path'].iloc[0]!r}: "
            f"{rows['error'].iloc[0]}). Convert them to PNG or JPEG; if {label!r} is not a "
            "class, move it out of the data folder or name the class folders in "
            "resources.dataset.config.class_folders."
        )
    labels = sorted(usable["label"].unique())
    if len(labels) < 2:
        raise DataFolderError(
            f"found images of only one class ({labels}) under {printable(str(data_dir))!r}; "
            "a classifier needs at least two class folders."
        )
