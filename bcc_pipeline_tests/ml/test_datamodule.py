import numpy as np
import torch

from bcc_pipeline.ml.datamodule import MirroredView, MRIDataModule, SplitViews, ViewDataset


def test_mirrored_view_flips_left_right():
    source = np.arange(2 * 3 * 2 * 4, dtype=np.uint8).reshape(2, 3, 2, 4)
    np.testing.assert_array_equal(MirroredView(source)[1], source[1][..., ::-1])


def test_training_draws_both_views_and_evaluation_only_the_first():
    images = np.random.default_rng(0).integers(0, 255, (1, 3, 4, 4), dtype=np.uint8)
    split = SplitViews([images, MirroredView(images)], np.zeros(1, dtype=np.int64))
    torch.manual_seed(0)
    training = [ViewDataset(split, random_view=True)[0][0] for _ in range(200)]
    flipped = sum(torch.equal(x, torch.from_numpy(images[0][..., ::-1].copy())) for x in training)
    assert 70 < flipped < 130, "each view is drawn with probability 1/2"
    evaluation = ViewDataset(split, random_view=False)
    assert all(torch.equal(evaluation[0][0], torch.from_numpy(images[0])) for _ in range(20))


def test_flip_only_on_the_training_split_and_no_test_split(sample_tensors):
    datamodule = MRIDataModule.from_tensors(sample_tensors, 8, horizontal_flip=True, num_workers=0)
    assert len(datamodule.splits["train"].views) == 2
    assert len(datamodule.splits["val"].views) == 1
    assert "test" not in datamodule.splits, "training never reads the test split"
    batch, labels = next(iter(datamodule.val_dataloader()))
    assert batch.dtype == torch.uint8 and batch.shape == (8, 3, 32, 32)
    first = torch.from_numpy(np.array(sample_tensors.images("val")[:8]))
    assert torch.equal(batch, first), "val is deterministic and in order"
    no_flip = MRIDataModule.from_tensors(sample_tensors, 16, horizontal_flip=False, num_workers=0)
    assert len(no_flip.splits["train"].views) == 1
