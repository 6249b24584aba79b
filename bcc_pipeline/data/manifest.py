"""Inventory of a data folder: one row per regular file, each either usable or rejected with a
reason, so that no input is silently lost."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import UnidentifiedImageError

from bcc_pipeline.data.images import IMAGE_SUFFIXES, ImageTooLargeError, open_image, perceptual_hash

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
]
OS_FILE_NAMES = frozenset({"thumbs.db", ".ds_store", "desktop.ini", "ehthumbs.db", "icon\r"})
HASH_DRAFT_SIZE = 128


class DataFolderError(ValueError):
    """The data folder cannot yield a dataset; the message says how to fix it."""


def list_files(data_dir: Path) -> list[Path]:
    """Every regular file beneath data_dir, sorted; symlinked folders are not followed."""
    found = []
    for folder, _, names in os.walk(data_dir):
        for name in names:
            path = Path(folder) / name
            if path.is_file():
                found.append(path)
    return sorted(found)


def folder_fingerprint(data_dir: Path | str) -> str:
    """Digest of every file's name, size and mtime: cheap (no reads), changes with the data."""
    data_dir = Path(data_dir)
    digest = hashlib.sha256()
    for path in list_files(data_dir):
        stat = path.stat()
        digest.update(
            f"{path.relative_to(data_dir)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()[:16]


def class_folders(data_dir: Path, files: list[Path]) -> set[Path]:
    """A class is a folder below data_dir that directly holds image files."""
    return {
        path.parent
        for path in files
        if path.suffix.lower() in IMAGE_SUFFIXES and path.parent != data_dir
    }


def inspect_file(path: Path, data_dir: Path, classes: set[Path]) -> dict:
    """One manifest row; every failure becomes a status, never an exception."""
    row = dict.fromkeys(MANIFEST_COLUMNS)
    row.update(path=path.relative_to(data_dir).as_posix(), error="")
    row["label"] = path.parent.name if path.parent in classes else ""
    try:
        data = path.read_bytes()
    except OSError as err:
        return {**row, "status": "unreadable", "error": str(err), "bytes": 0}
    row.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    if path.name.lower() in OS_FILE_NAMES or path.name.startswith("._"):
        return {**row, "status": "os_file", "error": "operating-system metadata file"}
    if not data:
        return {**row, "status": "empty", "error": "zero bytes"}
    try:
        image, (width, height) = open_image(data, draft_size=HASH_DRAFT_SIZE)
        row.update(format=image.format, width=width, height=height, mode=image.mode)
    except UnidentifiedImageError:
        return {**row, "status": "not_an_image", "error": "not a format Pillow can read"}
    except ImageTooLargeError as err:
        return {**row, "status": "too_large", "error": str(err)}
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        return {**row, "status": "unreadable", "error": f"{type(err).__name__}: {err}"}
    row["phash"] = perceptual_hash(image)
    if not row["label"]:
        return {**row, "status": "no_class_folder", "error": "image is not inside a class folder"}
    return {**row, "status": "ok"}


def scan_folder(data_dir: Path | str, workers: int | None = None) -> pd.DataFrame:
    """Manifest of data_dir, one row per regular file, sorted by path. Decoding runs on threads:
    Pillow and hashlib release the GIL, so this scales over cores without process start-up."""
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise DataFolderError(
            f"data_dir {str(data_dir)!r} does not exist. Download the Kaggle 'Brain Cancer - MRI "
            "dataset' (doi:10.17632/mk56jw9rns.1) and unzip it there, or generate a synthetic "
            "sample with `bcc-pipeline sample-data DIR`; then set "
            "resources.dataset.config.data_dir."
        )
    files = list_files(data_dir)
    if not files:
        raise DataFolderError(f"data_dir {str(data_dir)!r} is empty: no files to read")
    classes = class_folders(data_dir, files)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        rows = list(pool.map(lambda p: inspect_file(p, data_dir, classes), files))
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    manifest["bytes"] = manifest["bytes"].astype("int64")
    for column in ("width", "height"):
        manifest[column] = manifest[column].astype("Int64")
    for column in ("label", "sha256", "format", "mode", "phash", "status", "error"):
        manifest[column] = manifest[column].fillna("").astype(str)
    return manifest


def require_usable(manifest: pd.DataFrame, data_dir: Path | str) -> None:
    """Stop with a clear message when the folder cannot train a classifier at all."""
    usable = manifest[manifest["status"] == "ok"]
    if usable.empty:
        statuses = manifest["status"].value_counts().to_dict()
        raise DataFolderError(
            f"no readable images under {str(data_dir)!r} ({len(manifest)} files: {statuses}). "
            "Images must sit in one folder per class, e.g. brain_glioma/*.jpg."
        )
    labels = sorted(usable["label"].unique())
    if len(labels) < 2:
        raise DataFolderError(
            f"found images of only one class ({labels}) under {str(data_dir)!r}; a classifier "
            "needs at least two class folders."
        )
