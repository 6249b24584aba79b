import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bcc_pipeline import sample_data
from bcc_pipeline.sample_data import (
    CLASS_FOLDERS,
    KAGGLE_SUBDIR,
    OccupiedFolderError,
    create_sample_dataset,
    generate_sample_dataset,
    render_slice,
)
from bcc_pipeline.storage import UnwritableDirError

SIZE = 128
PER_CLASS = 30


def _class_files(root: Path, label: str) -> list[Path]:
    return sorted((root / label).iterdir())


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img, dtype=np.float64)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample_dataset(tmp_path_factory.mktemp("sample"), PER_CLASS, SIZE, seed=0)


def test_writes_kaggle_layout_and_file_names(tmp_path: Path) -> None:
    root = generate_sample_dataset(tmp_path, per_class=3, size=64)

    assert root == tmp_path / "Brain_Cancer raw MRI data" / "Brain_Cancer"
    assert root == tmp_path / KAGGLE_SUBDIR
    assert sorted(p.name for p in root.iterdir()) == list(CLASS_FOLDERS)
    for label in CLASS_FOLDERS:
        names = [p.name for p in _class_files(root, label)]
        # No temporary files are left behind by the atomic writes.
        assert names == [f"{label}_0001.jpg", f"{label}_0002.jpg", f"{label}_0003.jpg"]


def test_images_are_grayscale_jpegs_of_requested_size(tmp_path: Path) -> None:
    root = generate_sample_dataset(tmp_path, per_class=2, size=96)

    for label in CLASS_FOLDERS:
        for path in _class_files(root, label):
            with Image.open(path) as img:
                assert (img.format, img.mode, img.size) == ("JPEG", "L", (96, 96))


def test_render_slice_returns_uint8_square() -> None:
    pixels = render_slice("brain_menin", np.random.default_rng(1), size=80)

    assert pixels.dtype == np.uint8
    assert pixels.shape == (80, 80)
    assert pixels.max() > 150  # skull and lesion are bright
    assert pixels[0, 0] < 40  # corners are background


def test_render_slice_rejects_unknown_label() -> None:
    with pytest.raises(ValueError, match="unknown class"):
        render_slice("brain_healthy", np.random.default_rng(0))


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path: Path) -> None:
    first = generate_sample_dataset(tmp_path / "a", per_class=2, size=64, seed=7)
    again = generate_sample_dataset(tmp_path / "b", per_class=2, size=64, seed=7)
    other = generate_sample_dataset(tmp_path / "c", per_class=2, size=64, seed=8)

    for label in CLASS_FOLDERS:
        trios = zip(
            _class_files(first, label),
            _class_files(again, label),
            _class_files(other, label),
            strict=True,
        )
        for a, b, c in trios:
            assert a.read_bytes() == b.read_bytes()
            assert a.read_bytes() != c.read_bytes()


def test_smaller_per_class_is_a_prefix_of_larger(tmp_path: Path) -> None:
    small = generate_sample_dataset(tmp_path / "small", per_class=2, size=64)
    large = generate_sample_dataset(tmp_path / "large", per_class=4, size=64)

    for label in CLASS_FOLDERS:
        large_files = _class_files(large, label)
        assert len(large_files) == 4
        for s, bigger in zip(_class_files(small, label), large_files[:2], strict=True):
            assert s.name == bigger.name
            assert s.read_bytes() == bigger.read_bytes()


def test_class_mean_brightness_is_not_a_shortcut(dataset: Path) -> None:
    means = {
        label: np.mean([_load(p).mean() for p in _class_files(dataset, label)])
        for label in CLASS_FOLDERS
    }

    assert max(means.values()) - min(means.values()) < 3.0, means


def test_tumour_class_lesion_sits_in_the_lower_midline(dataset: Path) -> None:
    # Sellar region: centred horizontally, 62-78% of the height down.
    rows = slice(int(0.62 * SIZE), int(0.78 * SIZE))
    cols = slice(int(0.42 * SIZE), int(0.58 * SIZE))
    region_mean = {
        label: np.mean([_load(p) for p in _class_files(dataset, label)[:20]], axis=0)[
            rows, cols
        ].mean()
        for label in CLASS_FOLDERS
    }

    others = max(region_mean["brain_glioma"], region_mean["brain_menin"])
    assert region_mean["brain_tumor"] > others + 5.0, region_mean


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.jpg")}


def test_create_writes_the_same_sample_into_a_new_or_empty_folder(tmp_path: Path) -> None:
    expected = _files(generate_sample_dataset(tmp_path / "in_place", per_class=2, size=32))
    empty = tmp_path / "empty"
    (empty / "left" / "behind").mkdir(parents=True)  # folders without a file count as empty
    for out in (tmp_path / "new" / "sample", empty):
        root = create_sample_dataset(out, per_class=2, size=32)
        assert root == out / KAGGLE_SUBDIR
        assert _files(root) == expected
        assert [p.name for p in out.iterdir()] == [KAGGLE_SUBDIR.parts[0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "in_place", "new"]


@pytest.mark.parametrize(
    "occupant",
    [
        "notes.txt",
        f"{KAGGLE_SUBDIR.as_posix()}/brain_glioma/brain_glioma_0001.jpg",
        "deep/down/.hidden",
    ],
)
def test_create_refuses_a_folder_holding_any_file_and_leaves_it_alone(
    tmp_path: Path, occupant: str
) -> None:
    out = tmp_path / "real"
    (out / occupant).parent.mkdir(parents=True, exist_ok=True)
    (out / occupant).write_bytes(b"a real scan")
    with pytest.raises(OccupiedFolderError, match=re.escape(f"{out} already holds files ({out}/")):
        create_sample_dataset(out, per_class=1, size=32)
    assert [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()] == [occupant]
    assert (out / occupant).read_bytes() == b"a real scan"
    assert [p.name for p in tmp_path.iterdir()] == ["real"]


def test_create_refuses_a_folder_holding_a_link(tmp_path: Path) -> None:
    """A link to a folder is content, not an empty folder: followed, it may hold scans."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "scans").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OccupiedFolderError, match="out/scans\\)"):
        create_sample_dataset(tmp_path / "out", per_class=1, size=32)


def test_an_interrupted_create_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C after some images: neither a partial sample at OUT, which a later demo would
    take for its dataset, nor the hidden folder it was drawn in."""
    written = []

    def interrupted_after_two(*args: object) -> Path:
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(write_slice(*args))
        return written[-1]

    write_slice = sample_data.write_slice
    monkeypatch.setattr(sample_data, "write_slice", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        create_sample_dataset(tmp_path / "out", per_class=3, size=32)
    assert len(written) == 2 and os.listdir(tmp_path) == []


def test_create_keeps_a_file_written_into_the_folder_while_it_drew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another program fills the empty folder meanwhile: its file stays, the sample goes."""
    out = tmp_path / "out"
    out.mkdir()

    def another_writer_first(class_dir: Path, *args: object) -> Path:
        (out / "scan.jpg").write_bytes(b"a real scan")
        return write_slice(class_dir, *args)

    write_slice = sample_data.write_slice
    monkeypatch.setattr(sample_data, "write_slice", another_writer_first)
    with pytest.raises(
        UnwritableDirError, match="cannot put the finished sample at .*: Directory not empty"
    ):
        create_sample_dataset(out, per_class=1, size=32)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["scan.jpg"]
