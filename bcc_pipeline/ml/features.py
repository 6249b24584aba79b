"""Frozen-prefix feature cache: the frozen part of the backbone runs once per image and view,
in reduced precision, instead of once per image per epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bcc_pipeline.data.split import SPLITS
from bcc_pipeline.data.tensors import MappedArray, TensorSplits
from bcc_pipeline.ml.datamodule import MirroredView, SplitViews, split_views
from bcc_pipeline.ml.network import ClassifierNet, inference_copy

IN_MEMORY_LIMIT_BYTES = 256 * 1024**2
"""Caches larger than this are memory-mapped files, not RAM."""
PENDING_BYTES = 64 * 1024**2
"""Device outputs gathered before one copy back to the host."""


@torch.inference_mode()
def extract_features(
    net: ClassifierNet,
    images: MappedArray | MirroredView,
    batch_size: int = 64,
    spill_to: Path | None = None,
) -> np.ndarray | MappedArray:
    """float16 frozen-prefix outputs for every image, in order, computed by `net` where it
    lies and in its precision (see inference_copy). Above IN_MEMORY_LIMIT_BYTES they go to a
    memory-mapped file at `spill_to` instead of RAM."""
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
            features = _allocate((len(images), *pending[0].shape[1:]), spill_to)
        # Copy back only now and then: no host sync per batch, so transfers overlap compute.
        if sum(t.nbytes for t in pending) >= PENDING_BYTES or start + batch_size >= len(images):
            for output in pending:
                features[written : written + len(output)] = output.cpu().numpy()
                written += len(output)
            pending.clear()
    if isinstance(features, np.memmap):
        features.flush()
        return MappedArray(features.filename)
    return features


def _allocate(shape: tuple[int, ...], spill_to: Path | None) -> np.ndarray:
    if spill_to is not None and np.prod(shape) * 2 > IN_MEMORY_LIMIT_BYTES:
        return np.lib.format.open_memmap(spill_to, mode="w+", dtype=np.float16, shape=shape)
    return np.empty(shape, dtype=np.float16)


def cached_feature_splits(
    net: ClassifierNet,
    tensors: TensorSplits,
    device: torch.device,
    dtype: torch.dtype,
    horizontal_flip: bool,
    folder: Path,
    batch_size: int = 64,
) -> dict[str, SplitViews]:
    """Features of every split, computed by a copy of `net` on `device` in `dtype`: train gets
    the image and its mirror as two views."""
    frozen = inference_copy(net, device, dtype)
    splits = {}
    for split in SPLITS:
        sources = split_views(tensors.images(split), split, horizontal_flip)
        views = [
            extract_features(frozen, source, batch_size, folder / f"{split}_view{index}.npy")
            for index, source in enumerate(sources)
        ]
        splits[split] = SplitViews(views, tensors.labels(split))
    return splits
