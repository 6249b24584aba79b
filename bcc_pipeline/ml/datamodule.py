"""LightningDataModule over memory-mapped arrays: preprocessed uint8 images, or cached features.

Augmentation is a choice between views of an item: the image and its mirror. On pixels the
mirror is computed on the fly; on features both views were cached. Either way a training draw
picks one view with equal probability, and validation always sees the first (unflipped) view."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler

from bcc_pipeline.data.tensors import MappedArray, TensorSplits

TRAINING_SPLITS = ("train", "val")
"""What training reads. The test split stays unseen until test_metrics_report evaluates the
whole network on it, as predict runs it."""


class MirroredView:
    """A read-only array whose items are the source items flipped left-right."""

    def __init__(self, source: MappedArray | np.ndarray) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int | np.ndarray) -> np.ndarray:
        return self.source[index][..., ::-1]


def view_mirrors(split: str, horizontal_flip: bool) -> tuple[bool, ...]:
    """Whether each view of a split's images is their mirror image: with flips, training also
    sees the mirror; every other split sees the images as they are."""
    return (False, True) if horizontal_flip and split == "train" else (False,)


def split_views(
    images: MappedArray | np.ndarray, split: str, horizontal_flip: bool
) -> list[MappedArray | np.ndarray | MirroredView]:
    """The views of a split's images (see view_mirrors), the mirror computed on access."""
    return [
        MirroredView(images) if mirrored else images
        for mirrored in view_mirrors(split, horizontal_flip)
    ]


@dataclass
class SplitViews:
    views: Sequence[np.ndarray | MappedArray | MirroredView]
    labels: np.ndarray


class ViewDataset(Dataset):
    """Items of one split. A DataLoader fetches a whole batch with one `__getitems__` call
    (fancy indexing, one coin per image), not item by item: on cached features the per-item
    Python work used to cost more than the head's arithmetic."""

    def __init__(self, split: SplitViews, random_view: bool) -> None:
        self.split = split
        self.random_view = random_view and len(split.views) > 1

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        items, labels = self.__getitems__([index])
        return items[0], int(labels[0])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        views = self.split.views
        if not self.random_view:
            items = np.asarray(views[0][rows])
        else:
            choice = torch.randint(len(views), (len(rows),)).numpy()
            items = np.empty((len(rows), *np.shape(views[0][rows[:1]])[1:]), views[0].dtype)
            for view, source in enumerate(views):
                chosen = choice == view
                if chosen.any():
                    items[chosen] = source[rows[chosen]]
        return torch.from_numpy(np.ascontiguousarray(items)), torch.from_numpy(
            self.split.labels[rows].astype(np.int64)
        )


def _batch_as_fetched(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """ViewDataset.__getitems__ already returns the batch; there is nothing to collate."""
    return batch


class MRIDataModule(pl.LightningDataModule):
    """`batch_size` is what one DataLoader batch holds (a chunk of optimizer batches)."""

    def __init__(self, splits: dict[str, SplitViews], batch_size: int, num_workers: int) -> None:
        super().__init__()
        self.splits = splits
        self.batch_size = batch_size
        self.num_workers = num_workers

    @classmethod
    def from_tensors(
        cls,
        tensors: TensorSplits,
        batch_size: int,
        horizontal_flip: bool,
        num_workers: int,
    ) -> MRIDataModule:
        splits = {
            split: SplitViews(
                split_views(tensors.images(split), split, horizontal_flip), tensors.labels(split)
            )
            for split in TRAINING_SPLITS
        }
        return cls(splits, batch_size=batch_size, num_workers=num_workers)

    def _loader(self, split: str) -> DataLoader:
        training = split == "train"
        dataset = ViewDataset(self.splits[split], random_view=training)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            collate_fn=_batch_as_fetched,
            shuffle=training,
            sampler=None if training else _each_once_across_processes(dataset),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")


def _each_once_across_processes(dataset: ViewDataset) -> Sampler | None:
    """Under DDP, the share of the val images this process scores, each image by one process:
    Lightning's default sampler pads the split with repeats to share it out evenly, and the
    repeats would count twice in val_loss and val_acc (6/18 instead of 6/17). Every process
    needs a batch (buffers sync on the first), so a split smaller than the process count keeps
    the default. None (Lightning decides) outside DDP."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    if len(dataset) < torch.distributed.get_world_size():
        return None
    return UnrepeatedDistributedSampler(dataset, shuffle=False)
