"""Frozen-prefix feature cache: the frozen part of the backbone runs once per image and view,
in reduced precision, instead of once per image per epoch; and once per content, not once per
run: a store keyed by everything the features depend on lets a retrain on unchanged data and
an unchanged backbone read them back instead of computing them again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from bcc_pipeline.data.tensors import MappedArray, TensorSplits
from bcc_pipeline.ml.backbones import NO_WEIGHTS
from bcc_pipeline.ml.datamodule import TRAINING_SPLITS, MirroredView, SplitViews, split_views
from bcc_pipeline.ml.network import ClassifierNet, inference_copy
from bcc_pipeline.storage import filled_once

IN_MEMORY_LIMIT_BYTES = 256 * 1024**2
"""Caches larger than this stay memory-mapped files; smaller ones are read into RAM."""
PENDING_BYTES = 64 * 1024**2
"""Device outputs gathered before one copy back to the host."""
FORMAT = 1


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
    elif Path(weights).expanduser().is_file():
        stat = Path(weights).expanduser().stat()
        identity = f"{Path(weights).expanduser().resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    else:
        identity = weights
    parts = [
        FORMAT,
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


@torch.inference_mode()
def extract_features(
    net: ClassifierNet,
    images: MappedArray | MirroredView,
    destination: Path,
    batch_size: int = 64,
) -> None:
    """Write float16 frozen-prefix outputs for every image, in order, to a .npy file,
    computed by `net` where it lies and in its precision (see inference_copy)."""
    device = net.mean.device
    features: np.ndarray | None = None
    pending: list[torch.Tensor] = []  # outputs still on the device
    written = 0
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start : start + batch_size]))
        if device.type == "cuda":
            batch = batch.pin_memory()
        pending.append(net.frozen_features(batch.to(device, non_blocking=True)).half())
        if features is None:
            shape = (len(images), *pending[0].shape[1:])
            features = np.lib.format.open_memmap(
                destination, mode="w+", dtype=np.float16, shape=shape
            )
        # Copy back only now and then: no host sync per batch, so transfers overlap compute.
        if sum(t.nbytes for t in pending) >= PENDING_BYTES or start + batch_size >= len(images):
            for output in pending:
                features[written : written + len(output)] = output.cpu().numpy()
                written += len(output)
            pending.clear()
    if features is not None:
        features.flush()


def _view_file(store: Path, split: str, view: int) -> Path:
    return store / f"{split}_view{view}.npy"


def _load_views(store: Path, tensors: TensorSplits, horizontal_flip: bool) -> dict[str, SplitViews]:
    files = {
        split: [
            _view_file(store, split, view)
            for view in range(len(split_views(tensors.images(split), split, horizontal_flip)))
        ]
        for split in TRAINING_SPLITS
    }
    total = sum(path.stat().st_size for paths in files.values() for path in paths)
    in_memory = total <= IN_MEMORY_LIMIT_BYTES
    return {
        split: SplitViews(
            [np.load(path) if in_memory else MappedArray(path) for path in paths],
            tensors.labels(split),
        )
        for split, paths in files.items()
    }


def cached_feature_splits(
    net: ClassifierNet,
    tensors: TensorSplits,
    device: torch.device,
    dtype: torch.dtype,
    horizontal_flip: bool,
    store: Path,
    batch_size: int = 64,
) -> tuple[dict[str, SplitViews], bool]:
    """Features of the training splits (train gets the image and its mirror as two views), and
    whether they were read back from `store` rather than computed (see filled_once)."""
    with filled_once(store) as partial:
        if partial is not None:
            frozen = inference_copy(net, device, dtype)
            for split in TRAINING_SPLITS:
                sources = split_views(tensors.images(split), split, horizontal_flip)
                for view, source in enumerate(sources):
                    extract_features(frozen, source, _view_file(partial, split, view), batch_size)
    return _load_views(store, tensors, horizontal_flip), partial is None
