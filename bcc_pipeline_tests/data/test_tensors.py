import hashlib
import pickle
import shutil

import numpy as np
import pytest

from bcc_pipeline.data.manifest import scan_folder
from bcc_pipeline.data.split import SPLITS, split_fingerprint, stratified_group_split
from bcc_pipeline.data.tensors import ImageChangedError, TensorSplits, write_tensor_splits
from bcc_pipeline_tests.conftest import FRACTIONS


def test_tensors_are_uint8_nchw_with_labels_in_split_order(sample_tensors, sample_root):
    assert sample_tensors.class_names == ["brain_glioma", "brain_menin", "brain_tumor"]
    total = 0
    for split in SPLITS:
        images, labels = sample_tensors.images(split), sample_tensors.labels(split)
        assert isinstance(images.array, np.memmap), "training must be able to memory-map"
        assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32)
        assert len(labels) == len(images) == len(sample_tensors.paths(split))
        for path, label in zip(sample_tensors.paths(split), labels, strict=True):
            assert f"/{sample_tensors.class_names[label]}/" in path
        total += len(labels)
    assert total == 90
    assert 20 < np.asarray(sample_tensors.images("train")).mean() < 120, "not normalised"


def test_digests_follow_the_row_order_of_each_split(sample_tensors, sample_root):
    manifest = scan_folder(sample_root).set_index("path")
    for split in SPLITS:
        paths = sample_tensors.paths(split)
        assert sample_tensors.digests(split) == manifest.loc[paths, "sha256"].tolist()


def test_mapped_arrays_pickle_as_their_path(sample_tensors):
    images = sample_tensors.images("train")
    first = np.array(images[0])
    clone = pickle.loads(pickle.dumps(images))
    assert len(pickle.dumps(images)) < 1000, "a spawned worker gets the path, not the pixels"
    np.testing.assert_array_equal(clone[0], first)


def test_unusual_modes_decode_to_the_right_rgb_pixels(messy_root, tmp_path):
    root, _ = messy_root
    table = stratified_group_split(scan_folder(root), FRACTIONS, seed=0).table
    write_tensor_splits(table, root, tmp_path, 32, split_fingerprint(table))
    tensors = TensorSplits.open(tmp_path)
    pixels = {
        path.rsplit("/", 1)[1]: np.asarray(tensors.images(split)[index])
        for split in SPLITS
        for index, path in enumerate(tensors.paths(split))
    }
    grey16 = pixels["sixteen_bit.png"].astype(int)  # 0..60000 top to bottom, rescaled
    assert (grey16[0] == grey16[1]).all() and (grey16[1] == grey16[2]).all(), "grey stays grey"
    assert grey16[0, 0].mean() < 20 and grey16[0, -1].mean() > 230
    alpha = pixels["with_alpha.png"]  # opaque red 80x100, padded to a square on black
    assert alpha[:, 16, 16].tolist() == [200, 0, 0]
    assert alpha[:, 1, 16].tolist() == [0, 0, 0]
    palette = pixels["palette.bmp"]
    assert (palette == 90).all()


def test_file_changed_since_the_scan_is_a_clear_error(messy_root, tmp_path):
    root, _ = messy_root
    table = stratified_group_split(scan_folder(root), FRACTIONS, seed=0).table
    (root / table["path"].iloc[0]).write_bytes(b"gone")
    with pytest.raises(ImageChangedError, match="re-materialize raw_image_manifest"):
        write_tensor_splits(table, root, tmp_path, 32, split_fingerprint(table))
    assert not list(tmp_path.glob("*.npy")), "no half-written arrays are left behind"


def test_test_image_overwritten_with_a_training_image_is_caught(sample_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(sample_root, root)
    table = stratified_group_split(scan_folder(root), FRACTIONS, seed=0).table
    train = table[table["split"] == "train"].iloc[0]
    test = table[(table["split"] == "test") & (table["label"] == train["label"])].iloc[0]
    (root / test["path"]).write_bytes((root / train["path"]).read_bytes())  # still a valid JPEG
    with pytest.raises(ImageChangedError) as changed:
        write_tensor_splits(table, root, tmp_path / "out", 32, split_fingerprint(table))
    assert test["path"] in str(changed.value)
    assert "re-materialize raw_image_manifest" in str(changed.value)


def test_digests_are_each_rows_file_sha256_in_row_order(sample_tensors, sample_root):
    for split in SPLITS:
        digests = sample_tensors.digests(split)
        assert len(digests) == len(sample_tensors.labels(split))
        files = [sample_root / path for path in sample_tensors.paths(split)]
        assert digests == [hashlib.sha256(file.read_bytes()).hexdigest() for file in files]
