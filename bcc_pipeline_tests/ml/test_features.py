import numpy as np
import pytest
import torch

from bcc_pipeline.ml import features
from bcc_pipeline.ml.features import cached_feature_splits, extract_features, feature_store_key
from bcc_pipeline.ml.network import inference_batch_size
from bcc_pipeline.storage import STORE_COMPLETE
from bcc_pipeline_tests.conftest import tiny_net

CPU = torch.device("cpu")
KEY = dict(
    split_fingerprint="abc",
    image_size=32,
    backbone="vit_tiny",
    weights="none",
    seed=0,
    trainable_blocks=0,
    horizontal_flip=True,
    dtype=torch.bfloat16,
)


@pytest.mark.parametrize(
    "change",
    [
        {"split_fingerprint": "abd"},
        {"image_size": 48},
        {"backbone": "vit_b_16"},
        {"weights": "DEFAULT"},
        {"seed": 1},
        {"trainable_blocks": 1},
        {"horizontal_flip": False},
        {"dtype": torch.float32},
    ],
)
def test_the_store_key_changes_with_everything_the_features_depend_on(change):
    assert feature_store_key(**{**KEY, **change}) != feature_store_key(**KEY)


def test_the_seed_does_not_matter_for_pretrained_weights():
    pretrained = {**KEY, "weights": "DEFAULT"}
    assert feature_store_key(**pretrained) == feature_store_key(**{**pretrained, "seed": 7})


def test_a_local_weights_file_is_identified_by_its_content_stamp(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"1")
    first = feature_store_key(**{**KEY, "weights": str(weights)})
    weights.write_bytes(b"22")
    assert feature_store_key(**{**KEY, "weights": str(weights)}) != first


def test_features_are_computed_once_then_read_back(sample_tensors, tmp_path):
    net = tiny_net()
    store = tmp_path / "key"
    first, reused = cached_feature_splits(net, sample_tensors, CPU, torch.float32, True, store)
    assert not reused and (store / STORE_COMPLETE).is_file()
    assert len(first["train"].views) == 2 and len(first["val"].views) == 1
    with torch.no_grad():
        direct = net.frozen_features(torch.from_numpy(np.array(sample_tensors.images("val"))))
    np.testing.assert_allclose(first["val"].views[0], direct.half().numpy(), rtol=1e-3)
    train = torch.from_numpy(np.array(sample_tensors.images("train")))
    with torch.no_grad():
        as_is, mirrored = net.frozen_features(train), net.frozen_features(train.flip(-1))
    np.testing.assert_allclose(first["train"].views[0], as_is.half().numpy(), rtol=1e-3)
    np.testing.assert_allclose(first["train"].views[1], mirrored.half().numpy(), rtol=1e-3)
    second, reused = cached_feature_splits(net, sample_tensors, CPU, torch.float32, True, store)
    assert reused
    for split in first:
        for a, b in zip(first[split].views, second[split].views, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not list(tmp_path.glob(".*.tmp")), "no partial folder is left behind"


def test_an_unfinished_store_is_computed_again(sample_tensors, tmp_path):
    store = tmp_path / "key"
    store.mkdir()
    (store / "train_view0.npy").write_bytes(b"half a file")
    splits, reused = cached_feature_splits(
        tiny_net(), sample_tensors, CPU, torch.float32, True, store
    )
    assert not reused and (store / STORE_COMPLETE).is_file()
    assert np.asarray(splits["train"].views[0]).shape[0] == len(sample_tensors.labels("train"))


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (lambda path: path.write_bytes(path.read_bytes()[:-7]), "ValueError"),
        (lambda path: np.save(path, np.load(path)[:-1]), "ValueError"),
        (lambda path: path.unlink(), "FileNotFoundError"),
    ],
    ids=["cut short", "one row fewer", "deleted"],
)
def test_a_damaged_completed_store_is_said_and_computed_again(
    damage, error, sample_tensors, tmp_path
):
    store, said = tmp_path / "key", []
    net = tiny_net()
    whole, _ = cached_feature_splits(net, sample_tensors, CPU, torch.float32, True, store)
    expected = np.array(whole["train"].views[1])
    damage(store / "train_view1.npy")
    healed, reused = cached_feature_splits(
        net, sample_tensors, CPU, torch.float32, True, store, warn=said.append
    )
    assert not reused
    assert len(said) == 1 and said[0].startswith(f"{store} is damaged ({error}: ")
    np.testing.assert_array_equal(np.asarray(healed["train"].views[1]), expected)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["key"], "the old one is gone"


def test_a_file_where_the_store_should_be_is_set_aside_and_the_store_computed(
    sample_tensors, tmp_path
):
    store = tmp_path / "key"
    store.write_text("not a folder")
    splits, reused = cached_feature_splits(
        tiny_net(), sample_tensors, CPU, torch.float32, True, store
    )
    assert not reused and (store / STORE_COMPLETE).is_file()
    assert len(splits["val"].views[0]) == len(sample_tensors.labels("val"))


def test_the_cache_never_runs_the_backbone_on_the_test_split(sample_tensors, tmp_path):
    net = tiny_net()
    seen: list[int] = []
    net.backbone.register_forward_hook(lambda _m, args, _out: seen.append(len(args[0])))
    splits, _ = cached_feature_splits(net, sample_tensors, CPU, torch.float32, True, tmp_path / "k")
    assert set(splits) == {"train", "val"}
    n_train, n_val = (len(sample_tensors.labels(split)) for split in ("train", "val"))
    assert sum(seen) == 2 * n_train + n_val, "each training image and its mirror, each val image"
    assert sorted(p.name for p in (tmp_path / "k").glob("*.npy")) == [
        "train_view0.npy",
        "train_view1.npy",
        "val_view0.npy",
    ]


def test_features_of_many_batches_and_their_mirrors_land_in_order(sample_tensors, tmp_path):
    """Batches read ahead on a thread and written one after another keep their rows."""
    net, images = tiny_net(), sample_tensors.images("train")
    extract_features(net, images, {tmp_path / "a.npy": False, tmp_path / "m.npy": True}, 3)
    pixels = torch.from_numpy(np.array(images))
    with torch.no_grad():
        as_is, mirrored = net.frozen_features(pixels), net.frozen_features(pixels.flip(-1))
    close = {"rtol": 1e-3, "atol": 1e-5}  # batches of 3 round differently from one of all
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), as_is.half().numpy(), **close)
    np.testing.assert_allclose(np.load(tmp_path / "m.npy"), mirrored.half().numpy(), **close)


def test_cpu_outputs_are_written_as_they_come_not_held_back(tmp_path):
    """Held, each batch's small output would pin heap memory between the next batches' large
    temporaries (see _FeatureFile)."""
    file = features._FeatureFile(tmp_path / "f.npy", rows=5)
    first = torch.arange(6, dtype=torch.float32).view(2, 3)
    file.add(first)
    assert file.pending == [] and file.written == 2
    np.testing.assert_array_equal(file.array[:2], first.half().numpy())
    file.add(first + 6)
    file.close()
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy")[:4], np.arange(12).reshape(4, 3))


def test_no_images_means_no_batches_and_no_file(tmp_path):
    empty = np.empty((0, 3, 32, 32), dtype=np.uint8)
    extract_features(tiny_net(), empty, {tmp_path / "a.npy": False, tmp_path / "m.npy": True})
    assert not list(tmp_path.iterdir())


def test_without_a_batch_size_features_come_in_batches_of_the_networks_size(tmp_path, monkeypatch):
    net, seen = tiny_net(), []
    frozen_features = net.frozen_features
    monkeypatch.setattr(net, "frozen_features", lambda x: seen.append(len(x)) or frozen_features(x))
    batch = inference_batch_size(net, CPU)
    images = np.zeros((2 * batch + 3, 3, 32, 32), dtype=np.uint8)
    extract_features(net, images, {tmp_path / "a.npy": False})
    assert seen == [batch, batch, 3]


def test_extraction_reads_its_batches_from_the_file_not_through_the_map(
    sample_tensors, tmp_path, no_reads_through_the_map
):
    """Pages read through the map would stay in the process's resident memory for the whole
    split (see MappedArray.read)."""
    images = sample_tensors.images("train")
    expected = np.array(images)
    net = tiny_net()
    extract_features(net, images, {tmp_path / "a.npy": False}, 4)
    with torch.no_grad():
        direct = net.frozen_features(torch.from_numpy(expected)).half().numpy()
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), direct, rtol=1e-3, atol=1e-5)
