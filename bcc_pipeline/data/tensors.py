"""Decode each split once into uint8 NCHW arrays that training memory-maps: no per-epoch JPEG
decoding, and no float copy of the dataset in RAM. Normalisation is left to the backbone."""

from __future__ import annotations

import hashlib
import json
from contextlib import ExitStack
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import pandas as pd

from bcc_pipeline.data.images import ImageRejected, model_input, read_image_file
from bcc_pipeline.data.manifest import printable
from bcc_pipeline.data.parallel import parallel_map
from bcc_pipeline.data.split import SPLITS
from bcc_pipeline.storage import allocated_npy, atomic_path, write_json

META_FILE = "meta.json"


class ImageChangedError(RuntimeError):
    """A file's bytes are no longer those the manifest hashed (or no longer decode)."""


def _images_file(folder: Path, split: str) -> Path:
    return folder / f"{split}_images.npy"


def _labels_file(folder: Path, split: str) -> Path:
    return folder / f"{split}_labels.npy"


def _verified_input(path: Path, sha256: str, size: int, image_size: int) -> np.ndarray:
    """Model input of a file whose bytes are still those the manifest hashed. Decoding alone
    would miss a file overwritten with another valid image (say a training image copied over a
    test image): the split would then leak, and no check on the split table could see it."""
    try:
        data = read_image_file(path, max_bytes=size)
        if hashlib.sha256(data).hexdigest() == sha256:
            return model_input(data, image_size)
        reason = "its bytes differ from those scanned"
    except ImageRejected as err:
        reason = str(err)
    raise ImageChangedError(
        f"{printable(str(path))} no longer matches raw_image_manifest ({reason}); "
        "re-materialize raw_image_manifest and the assets after it"
    )


@lru_cache(maxsize=len(SPLITS))
def _mapped_rows(images_file: Path) -> np.ndarray:
    """An images file, memory-mapped once per process rather than once per image (a third of a
    millisecond each); pages are shared, so no flush is needed."""
    return np.load(images_file, mmap_mode="r+")


def _decode_into(task: tuple[Path, int, str, str, int], data_dir: Path, image_size: int) -> None:
    """Decode one file (checked against its digest) into its row of its split's images file."""
    images_file, index, path, digest, size = task
    _mapped_rows(images_file)[index] = _verified_input(
        data_dir / path, digest, int(size), image_size
    )


def write_tensor_splits(
    split_table: pd.DataFrame,
    data_dir: Path | str,
    out_dir: Path | str,
    image_size: int,
    split_fingerprint: str,
    workers: int | None = None,
) -> dict:
    """Write `<split>_images.npy` (uint8 N,3,S,S), `<split>_labels.npy` and meta.json, which
    lists each split's paths and sha256 digests in row order. Every file is re-read and its
    sha256 checked against the split table's before it is decoded; all splits are decoded by
    one pool of workers."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    class_names = sorted(split_table["label"].unique())
    class_index = {name: i for i, name in enumerate(class_names)}
    meta: dict = {
        "image_size": image_size,
        "class_names": class_names,
        "layout": "uint8 NCHW RGB, not normalised",
        "split_fingerprint": split_fingerprint,
        "splits": {},
    }
    rows = {
        split: split_table[split_table["split"] == split].sort_values("path") for split in SPLITS
    }
    with ExitStack() as files:
        tasks = []
        for split, split_rows in rows.items():
            tmp = files.enter_context(atomic_path(_images_file(out_dir, split)))
            # Allocated on disk; the workers write their rows into the file.
            allocated_npy(tmp, np.uint8, (len(split_rows), 3, image_size, image_size))
            tasks += [
                (tmp, index, path, digest, size)
                for index, (path, digest, size) in enumerate(
                    zip(split_rows["path"], split_rows["sha256"], split_rows["bytes"], strict=True)
                )
            ]
        try:
            parallel_map(
                partial(_decode_into, data_dir=data_dir, image_size=image_size), tasks, workers
            )
        finally:
            _mapped_rows.cache_clear()  # this process's maps, when it decoded rows itself
    for split, split_rows in rows.items():
        labels = np.array([class_index[name] for name in split_rows["label"]], dtype=np.int64)
        with atomic_path(_labels_file(out_dir, split)) as tmp, tmp.open("wb") as handle:
            np.save(handle, labels)
        paths = split_rows["path"].tolist()
        meta["splits"][split] = {
            "count": len(paths),
            "paths": paths,
            "sha256": split_rows["sha256"].tolist(),
        }
    write_json(out_dir / META_FILE, meta)
    return meta


class MappedArray:
    """A .npy file, memory-mapped on first use. It pickles as its path, so a spawned DDP
    worker re-opens the file instead of receiving a copy of the data."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: int | slice) -> np.ndarray:
        return self.array[index]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows start:stop (clipped as a slice is) as a new array, read from the file instead
        of through the map. A pass over a whole split then leaves its pages in the kernel's
        page cache, not in the process's resident memory, which no longer grows with the
        split: at 6056 images the mapped train split was 0.5 GiB of the run's peak RSS."""
        array = self.array
        start, stop, _ = slice(start, stop).indices(len(array))
        rows = np.empty((max(stop - start, 0), *array.shape[1:]), array.dtype)
        row_bytes = rows.itemsize * int(np.prod(array.shape[1:]))
        with self.path.open("rb") as handle:
            handle.seek(array.offset + start * row_bytes)
            read = handle.readinto(rows.reshape(-1).view(np.uint8))
        if read != rows.nbytes:
            raise OSError(f"{self.path} ended early: it was changed after it was written")
        return rows

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        """np.array(mapped) is a writable copy; np.asarray(mapped) the read-only map."""
        return np.array(self.array, dtype=dtype, copy=copy)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def nbytes(self) -> int:
        return self.array.nbytes

    def __getstate__(self) -> dict:
        return {"path": self.path, "_array": None}


def read_rows(images: np.ndarray | MappedArray, start: int, stop: int) -> np.ndarray:
    """Rows start:stop as a new array: read from the file for a MappedArray (see
    MappedArray.read), copied for an array in memory."""
    if isinstance(images, MappedArray):
        return images.read(start, stop)
    return np.array(images[start:stop])


@dataclass(frozen=True)
class TensorSplits:
    """Read side of write_tensor_splits: memory-mapped images, labels and class names."""

    folder: Path
    meta: dict

    @classmethod
    def open(cls, folder: Path | str) -> TensorSplits:
        folder = Path(folder)
        return cls(folder=folder, meta=json.loads((folder / META_FILE).read_text()))

    @classmethod
    def open_whole(cls, folder: Path | str) -> TensorSplits:
        """open, after making sure every split's images, labels and paths are there and agree
        in length: a ValueError or OSError (from numpy or here) when a file was cut short,
        deleted or overwritten since it was written."""
        tensors = cls.open(folder)
        for split in tensors.meta["splits"]:
            images, labels = tensors.images(split), tensors.labels(split)
            if not len(images) == len(labels) == len(tensors.paths(split)):
                raise ValueError(
                    f"split {split!r} holds {len(images)} images and {len(labels)} labels for "
                    f"{len(tensors.paths(split))} paths"
                )
        return tensors

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["split_fingerprint"])

    def images(self, split: str) -> MappedArray:
        return MappedArray(_images_file(self.folder, split))

    def labels(self, split: str) -> np.ndarray:
        return np.load(_labels_file(self.folder, split))

    def paths(self, split: str) -> list[str]:
        return list(self.meta["splits"][split]["paths"])

    def digests(self, split: str) -> list[str]:
        """sha256 of each image's file, in the order of images(), labels() and paths()."""
        return list(self.meta["splits"][split]["sha256"])
