from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bcc_pipeline.sample_data import (
    CLASS_FOLDERS,
    KAGGLE_SUBDIR,
    generate_sample_dataset,
    render_slice,
)

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
