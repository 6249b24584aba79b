"""Frozen-prefix feature cache: the frozen part of the backbone runs once per image and view,
in reduced precision, instead of once per image per epoch; and once per content, not once per
run: a store keyed by everything the features depend on lets a retrain on unchanged data and
an unchanged backbone read them back instead of computing them again."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bcc_pipeline.data.tensors import MappedArray, TensorSplits, read_rows
from bcc_pipeline.ml.backbones import NO_WEIGHTS, is_local_file
from bcc_pipeline.ml.datamodule import TRAINING_SPLITS, SplitViews, view_mirrors
from bcc_pipeline.ml.network import ClassifierNet, inference_batch_size, inference_copy
from bcc_pipeline.storage import allocated_npy, reused_or_filled

IN_MEMORY_LIMIT_BYTES = 256 * 1024**2
"""Caches larger than this stay memory-mapped files; smaller ones are read into RAM."""
PENDING_BYTES = 64 * 1024**2
"""Accelerator outputs gathered before one copy back to the host."""
STORE_FORMAT = 1
"""Bump when the layout of a feature store changes: stores of the old layout are not read."""

logger = logging.getLogger(__name__)


def feature_store_key(
    split_fingerprint: str,
    image_size: int,
    backbone: str,
    weights: str,
    seed: int,
    trainable_blocks: int,
    horizontal_flip: bool,
    dtype: torch.dtype,
) -> str:
    """A digest of everything the frozen prefix's output depends on. Random-init weights
    depend on the seed; a local weights file on its size and modification time."""
    if weights.lower() in NO_WEIGHTS:
        identity = f"random init, seed {seed}"
    elif is_local_file(weights):  # the network was built from it, so it is there
        file = Path(weights).expanduser().resolve()
        identity = f"{file}:{file.stat().st_size}:{file.stat().st_mtime_ns}"
    else:
        identity = weights
    parts = [
        STORE_FORMAT,
        split_fingerprint,
        image_size,
        backbone,
        identity,
        trainable_blocks,
        horizontal_flip,
        str(dtype),
        torch.__version__,
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


class _FeatureFile:
    """A .npy file of float16 features, filled in order. Outputs on an accelerator are copied
    back only now and then: no host sync per batch, so transfers overlap compute. Outputs on
    the CPU are written at once: held back, hundreds of small tensors would lie between each
    batch's large temporaries and fragment the heap (the run's anonymous memory grew by about
    60 MB a minute with vit_b_16 at batch 16, and was flat once they were written at once;
    benchmarks/results/bench_memory_fragmentation.txt)."""

    def __init__(self, path: Path, rows: int) -> None:
        self.path, self.rows = path, rows
        self.array: np.ndarray | None = None
        self.pending: list[torch.Tensor] = []  # outputs still on the accelerator
        self.written = 0

    def add(self, output: torch.Tensor) -> None:
        if self.array is None:
            self.array = allocated_npy(self.path, np.float16, (self.rows, *output.shape[1:]))
        self.pending.append(output.half())
        if output.is_cpu or sum(t.nbytes for t in self.pending) >= PENDING_BYTES:
            self.copy_back()

    def copy_back(self) -> None:
        for output in self.pending:
            self.array[self.written : self.written + len(output)] = output.cpu().numpy()
            self.written += len(output)
        self.pending.clear()

    def close(self) -> None:
        self.copy_back()
        if self.array is not None:
            self.array.flush()


def _read_ahead(images: MappedArray, batch_size: int, pin: bool) -> Iterator[torch.Tensor]:
    """uint8 batches of `images`, each read (and pinned, for a GPU) on a helper thread while
    the caller works on the one before; reading the file releases the GIL, so the device is
    not kept waiting for the host."""

    def read(start: int) -> torch.Tensor:
        batch = torch.from_numpy(read_rows(images, start, start + batch_size))
        return batch.pin_memory() if pin else batch

    starts = range(0, len(images), batch_size)
    if not starts:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-reader") as reader:
        upcoming = reader.submit(read, starts[0])
        for following in [*starts[1:], None]:
            batch = upcoming.result()
            if following is not None:
                upcoming = reader.submit(read, following)
            yield batch


@torch.inference_mode()
def extract_features(
    net: ClassifierNet,
    images: MappedArray,
    destinations: Mapping[Path, bool],
    batch_size: int | None = None,
) -> None:
    """Write float16 frozen-prefix outputs for every image, in order, to each destination .npy
    file: of the images themselves, or of their mirror images where the destination maps to
    True; computed by `net` where it lies and in its precision (see inference_copy). Each batch
    is read from the file once and mirrored on the device. batch_size None:
    inference_batch_size's choice."""
    device = net.mean.device
    batch_size = batch_size or inference_batch_size(net, device)
    files = [(_FeatureFile(path, len(images)), mirrored) for path, mirrored in destinations.items()]
    for batch in _read_ahead(images, batch_size, pin=device.type == "cuda"):
        batch = batch.to(device, non_blocking=True)
        for file, mirrored in files:
            file.add(net.frozen_features(batch.flip(-1) if mirrored else batch))
    for file, _ in files:
        file.close()


def view_files(store: Path, split: str, horizontal_flip: bool) -> dict[Path, bool]:
    """A split's view files in `store`, in view order, each with whether it holds the mirror."""
    return {
        store / f"{split}_view{view}.npy": mirrored
        for view, mirrored in enumerate(view_mirrors(split, horizontal_flip))
    }


def _load_views(store: Path, tensors: TensorSplits, horizontal_flip: bool) -> dict[str, SplitViews]:
    """The stored views; a ValueError or OSError when a file does not hold one row per image."""
    files = {split: list(view_files(store, split, horizontal_flip)) for split in TRAINING_SPLITS}
    total = sum(path.stat().st_size for paths in files.values() for path in paths)
    in_memory = total <= IN_MEMORY_LIMIT_BYTES
    splits = {}
    for split, paths in files.items():
        views = [np.load(path) if in_memory else MappedArray(path) for path in paths]
        labels = tensors.labels(split)
        for path, view in zip(paths, views, strict=True):
            if len(view) != len(labels):
                raise ValueError(f"{path.name} holds {len(view)} rows for {len(labels)} images")
        splits[split] = SplitViews(views, labels)
    return splits


def cached_feature_splits(
    net: ClassifierNet,
    tensors: TensorSplits,
    device: torch.device,
    dtype: torch.dtype,
    horizontal_flip: bool,
    store: Path,
    batch_size: int | None = None,
    warn: Callable[[str], None] = logger.warning,
) -> tuple[dict[str, SplitViews], bool]:
    """Features of the training splits (train gets the image and its mirror as two views), and
    whether they were read back from `store` rather than computed (see reused_or_filled)."""

    def fill(partial: Path) -> None:
        frozen = inference_copy(net, device, dtype)
        for split in TRAINING_SPLITS:
            files = view_files(partial, split, horizontal_flip)
            extract_features(frozen, tensors.images(split), files, batch_size)

    return reused_or_filled(
        store, fill, lambda folder: _load_views(folder, tensors, horizontal_flip), warn
    )
