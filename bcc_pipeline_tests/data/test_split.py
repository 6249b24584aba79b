import numpy as np
import pandas as pd
import pytest

from bcc_pipeline.data.manifest import scan_folder
from bcc_pipeline.data.split import (
    SplitConfigError,
    split_fingerprint,
    stratified_group_split,
)
from bcc_pipeline.sample_data import KAGGLE_SUBDIR
from bcc_pipeline_tests.conftest import FRACTIONS


@pytest.fixture(scope="module")
def manifest(sample_root) -> pd.DataFrame:
    return scan_folder(sample_root)


def test_split_is_stratified_by_class(manifest):
    table = stratified_group_split(manifest, FRACTIONS, seed=0).table
    counts = pd.crosstab(table["label"], table["split"])
    for label in counts.index:
        assert counts.loc[label].to_dict() == {"test": 3, "train": 21, "val": 6}


def test_same_seed_same_split_whatever_the_file_order(manifest):
    first = stratified_group_split(manifest, FRACTIONS, seed=7).table
    shuffled = manifest.sample(frac=1.0, random_state=3)
    second = stratified_group_split(shuffled, FRACTIONS, seed=7).table
    pd.testing.assert_frame_equal(first, second)
    other = stratified_group_split(manifest, FRACTIONS, seed=8).table
    assert split_fingerprint(other) != split_fingerprint(first)


def test_rejected_files_are_left_out(messy_root):
    root, _ = messy_root
    manifest = scan_folder(root)
    table = stratified_group_split(manifest, FRACTIONS, seed=0).table
    assert set(table["path"]) == set(manifest.loc[manifest["status"] == "ok", "path"])


def _with_copies(manifest: pd.DataFrame, count: int) -> pd.DataFrame:
    """Byte-identical '... - Copy.jpg' rows, as in the Kaggle brain_tumor folder."""
    originals = manifest[manifest["label"] == "brain_tumor"].head(count)
    copies = originals.assign(path=originals["path"].str.replace(".jpg", " - Copy.jpg"))
    return pd.concat([manifest, copies], ignore_index=True)


def test_exact_duplicates_never_cross_splits(manifest):
    for seed in range(5):
        table = stratified_group_split(_with_copies(manifest, 10), FRACTIONS, seed=seed).table
        splits_per_digest = table.groupby("sha256")["split"].nunique()
        assert splits_per_digest.max() == 1
        assert (table.groupby("sha256").size() == 2).sum() == 10


def test_near_duplicates_are_grouped(sample_root, tmp_path):
    from PIL import Image

    folder = sample_root / KAGGLE_SUBDIR / "brain_menin"
    root = tmp_path / "near"
    target = root / "brain_menin"
    target.mkdir(parents=True)
    for image in sorted(folder.glob("*.jpg"))[:12]:
        (target / image.name).write_bytes(image.read_bytes())
        recompressed = Image.open(image).resize((120, 120))
        recompressed.save(target / f"{image.stem}_small.jpg", quality=60)
    other = root / "brain_glioma"
    other.mkdir()
    for image in sorted((sample_root / KAGGLE_SUBDIR / "brain_glioma").glob("*.jpg"))[:12]:
        (other / image.name).write_bytes(image.read_bytes())
    near = scan_folder(root)
    result = stratified_group_split(near, FRACTIONS, seed=0)
    menin = result.table[result.table["label"] == "brain_menin"]
    assert menin.groupby("group").size().eq(2).all()
    assert menin.groupby("group")["split"].nunique().max() == 1
    assert len(result.duplicate_groups) == 12
    exact_only = stratified_group_split(near, FRACTIONS, seed=0, near_duplicate_distance=None)
    assert exact_only.duplicate_groups.empty


def test_same_content_with_two_labels_is_excluded_and_reported(manifest):
    tumour = manifest[manifest["label"] == "brain_tumor"].head(2)
    relabelled = tumour.assign(
        label="brain_glioma", path=tumour["path"].str.replace("brain_tumor/", "brain_glioma/x_")
    )
    result = stratified_group_split(pd.concat([manifest, relabelled]), FRACTIONS, seed=0)
    assert len(result.conflicts) == 4
    assert not result.table["sha256"].isin(tumour["sha256"]).any()


@pytest.mark.parametrize(
    "fractions",
    [
        {"train": 0.7, "val": 0.2, "test": 0.2},
        {"train": 0.9, "val": 0.0, "test": 0.1},
        {"train": 0.5, "val": 0.2, "test": 0.2},
    ],
)
def test_bad_fractions_are_config_errors(manifest, fractions):
    with pytest.raises(SplitConfigError):
        stratified_group_split(manifest, fractions, seed=0)


def test_group_ids_are_stable_names(manifest):
    table = stratified_group_split(manifest, FRACTIONS, seed=0).table
    assert table["group"].str.match(r"^g[0-9a-f]{16}$").all()
    assert np.array_equal(
        table.sort_values("path")["group"].to_numpy(),
        stratified_group_split(manifest, FRACTIONS, seed=1).table.sort_values("path")["group"],
    )
