import errno
import hashlib
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from bcc_pipeline.data.manifest import scan_folder
from bcc_pipeline.data.split import SPLITS, split_fingerprint, stratified_group_split
from bcc_pipeline.data.tensors import (
    ImageChangedError,
    MappedArray,
    TensorSplits,
    read_rows,
    write_tensor_splits,
)
from bcc_pipeline.storage import DiskFullError
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


def test_reading_rows_from_the_file_gives_what_slicing_the_map_gives(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (7, 3, 4, 5), dtype=np.uint8)
    np.save(tmp_path / "x.npy", data)
    mapped = MappedArray(tmp_path / "x.npy")
    for start, stop in [(0, 3), (3, 7), (5, 100), (7, 9), (2, 2)]:
        rows = mapped.read(start, stop)
        np.testing.assert_array_equal(rows, data[start:stop])
        assert rows.flags.writeable and not isinstance(rows, np.memmap)
    np.testing.assert_array_equal(read_rows(data, 5, 100), data[5:])
    np.testing.assert_array_equal(read_rows(mapped, 1, 4), data[1:4])


def _resident_file_kib() -> int:
    lines = Path("/proc/self/status").read_text().splitlines()
    status = dict(line.split(":", 1) for line in lines)
    return int(status["RssFile"].split()[0])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_a_pass_of_reads_leaves_the_split_out_of_resident_memory(tmp_path):
    """Through the map, every page read stays resident in the process; read() leaves them to
    the page cache, so a pass over a large split does not grow the process."""
    np.save(tmp_path / "big.npy", np.ones((64, 1024, 1024), dtype=np.uint8))  # 64 MiB
    before = _resident_file_kib()
    read_pass = MappedArray(tmp_path / "big.npy")
    for start in range(0, 64, 8):
        read_pass.read(start, start + 8)
    after_reads = _resident_file_kib()
    mapped_pass = MappedArray(tmp_path / "big.npy")
    for start in range(0, 64, 8):
        np.array(mapped_pass[start : start + 8])
    after_mapped = _resident_file_kib()
    assert after_reads - before < 16 * 1024
    assert after_mapped - after_reads > 48 * 1024, "the map should hold what it read"


def test_a_file_cut_short_after_it_was_opened_is_a_clear_error(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 3, 8, 8), dtype=np.uint8))
    mapped = MappedArray(tmp_path / "x.npy")
    assert len(mapped) == 4
    with open(tmp_path / "x.npy", "r+b") as handle:
        handle.truncate(handle.seek(0, 2) - 100)
    with pytest.raises(OSError, match="ended early"):
        mapped.read(2, 4)


def test_no_room_for_the_tensors_is_said_and_leaves_no_file(sample_root, tmp_path, monkeypatch):
    def full_disk(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full_disk)
    table = stratified_group_split(scan_folder(sample_root), FRACTIONS, seed=0).table
    with pytest.raises(DiskFullError, match="no room on the disk"):
        write_tensor_splits(table, sample_root, tmp_path, 32, split_fingerprint(table))
    assert list(tmp_path.iterdir()) == []
