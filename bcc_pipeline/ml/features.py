"""Frozen-prefix feature cache: the frozen part of the backbone runs once per image and view,
in reduced precision, instead of once per image per epoch."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from bcc_pipeline.data.split import SPLITS
from bcc_pipeline.data.tensors import MappedArray, TensorSplits
from bcc_pipeline.ml.datamodule import MirroredView, SplitViews
from bcc_pipeline.ml.module import BrainMRIClassifier

IN_MEMORY_LIMIT_BYTES = 256 * 1024**2
"""Caches larger than this are memory-mapped files, not RAM."""


def _autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.inference_mode()
def extract_features(
    module: BrainMRIClassifier,
    images: MappedArray | MirroredView,
    device: torch.device,
    dtype: torch.dtype = torch.bfloat16,
    batch_size: int = 64,
    spill_to: Path | None = None,
) -> np.ndarray | MappedArray:
    """float16 frozen-prefix outputs for every image, in order. Above IN_MEMORY_LIMIT_BYTES
    they go to a memory-mapped file at `spill_to` instead of RAM."""
    module = module.to(device).eval()
    probe = torch.from_numpy(np.array(images[0]))[None].to(device)
    shape = (len(images), *module.frozen_features(probe).shape[1:])
    spill = spill_to is not None and np.prod(shape) * 2 > IN_MEMORY_LIMIT_BYTES
    if spill:
        features = np.lib.format.open_memmap(spill_to, mode="w+", dtype=np.float16, shape=shape)
    else:
        features = np.empty(shape, dtype=np.float16)
    for start in range(0, len(images), batch_size):
        stop = min(start + batch_size, len(images))
        batch = np.stack([images[i] for i in range(start, stop)])
        pixels = torch.from_numpy(batch).to(device, non_blocking=True)
        with _autocast(device, dtype):
            features[start:stop] = module.frozen_features(pixels).float().cpu().numpy()
    if spill:
        features.flush()
        return MappedArray(spill_to)
    return features


def cached_feature_splits(
    module: BrainMRIClassifier,
    tensors: TensorSplits,
    device: torch.device,
    dtype: torch.dtype,
    horizontal_flip: bool,
    folder: Path,
    batch_size: int = 64,
) -> dict[str, SplitViews]:
    """Features of every split: train gets the image and its mirror as two views."""
    splits = {}
    for split in SPLITS:
        images = tensors.images(split)
        sources = (
            [images, MirroredView(images)] if horizontal_flip and split == "train" else [images]
        )
        views = [
            extract_features(
                module, source, device, dtype, batch_size, folder / f"{split}_view{index}.npy"
            )
            for index, source in enumerate(sources)
        ]
        splits[split] = SplitViews(views, tensors.labels(split))
    return splits
