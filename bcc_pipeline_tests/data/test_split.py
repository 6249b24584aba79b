import hashlib

import numpy as np
import pandas as pd
import pytest

from bcc_pipeline.data.manifest import scan_folder
from bcc_pipeline.data.split import (
    CARRIED_OVER,
    JOINED_GROUP,
    SplitConfigError,
    SplitResult,
    split_fingerprint,
    stratified_group_split,
)
from bcc_pipeline.sample_data import KAGGLE_SUBDIR
from bcc_pipeline_tests.conftest import FRACTIONS
from bcc_pipeline_tests.growth import (
    SAMPLE_PER_CLASS,
    add_exact_copy,
    add_new_images,
    add_reencoded_copy,
    copy_sample,
)


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
    exact_only = stratified_group_split(near, FRACTIONS, seed=0, near_duplicate_distance=-1)
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


@pytest.mark.parametrize("distance", [-2, 256])
def test_near_duplicate_distance_out_of_range_is_a_config_error(manifest, distance):
    with pytest.raises(SplitConfigError, match="near_duplicate_distance must be"):
        stratified_group_split(manifest, FRACTIONS, seed=0, near_duplicate_distance=distance)


def test_group_ids_are_stable_names(manifest):
    table = stratified_group_split(manifest, FRACTIONS, seed=0).table
    assert table["group"].str.match(r"^g[0-9a-f]{16}$").all()
    assert np.array_equal(
        table.sort_values("path")["group"].to_numpy(),
        stratified_group_split(manifest, FRACTIONS, seed=1).table.sort_values("path")["group"],
    )


# --------------------------------------------------------------------------- growth


@pytest.fixture(scope="module")
def first_split(manifest) -> SplitResult:
    return stratified_group_split(manifest, FRACTIONS, seed=0)


@pytest.fixture(scope="module")
def grown(sample_root, tmp_path_factory, first_split) -> dict:
    """The sample grown by 5 images per class, plus an exact and a re-encoded copy of a test
    image (17 new files, 19%)."""
    root = copy_sample(sample_root, tmp_path_factory.mktemp("grown") / "data")
    add_new_images(root, SAMPLE_PER_CLASS + 5)
    original = first_split.table.loc[first_split.table["split"] == "test", "path"].iloc[0]
    copies = {
        "exact": add_exact_copy(root, original),
        "reencoded": add_reencoded_copy(root, original),
    }
    return {"manifest": scan_folder(root), "original": original, **copies}


def _splits(result: SplitResult) -> pd.Series:
    return result.table.set_index("path")["split"]


def test_grown_folder_keeps_every_old_image_in_its_split(first_split, grown):
    result = stratified_group_split(
        grown["manifest"], FRACTIONS, seed=0, previous=first_split.ledger
    )
    before, after = _splits(first_split), _splits(result)
    assert after[before.index].equals(before)
    assignment = result.table.set_index("path")["assignment"]
    assert (assignment[before.index] == CARRIED_OVER).all()
    assert len(after) - len(before) == 17
    fresh = _splits(stratified_group_split(grown["manifest"], FRACTIONS, seed=0))
    assert (fresh[before.index] != before).any(), "without the ledger, old images would move"


def test_copies_of_a_test_image_follow_it(first_split, grown):
    result = stratified_group_split(
        grown["manifest"], FRACTIONS, seed=0, previous=first_split.ledger
    )
    table = result.table.set_index("path")
    copies = [grown["original"], grown["exact"], grown["reencoded"]]
    assert (table.loc[copies, "split"] == "test").all()
    assert table.loc[copies, "group"].nunique() == 1
    assert table.loc[grown["exact"], "assignment"] == CARRIED_OVER, "its content had a split"
    assert table.loc[grown["reencoded"], "assignment"] == JOINED_GROUP


def test_grown_split_keeps_each_class_near_the_fractions(first_split, grown):
    result = stratified_group_split(
        grown["manifest"], FRACTIONS, seed=0, previous=first_split.ledger
    )
    shares = pd.crosstab(result.table["label"], result.table["split"], normalize="index")
    assert (shares - pd.Series(FRACTIONS)).abs().to_numpy().max() <= 0.05


def test_deleted_images_drop_out_and_come_back_to_their_split(first_split, manifest):
    gone = first_split.table["path"].iloc[::7]
    shrunk = stratified_group_split(
        manifest[~manifest["path"].isin(gone)], FRACTIONS, seed=0, previous=first_split.ledger
    )
    assert not shrunk.table["path"].isin(gone).any()
    before = _splits(first_split)
    assert _splits(shrunk).equals(before.drop(gone).sort_index().loc[_splits(shrunk).index])
    back = stratified_group_split(manifest, FRACTIONS, seed=3, previous=shrunk.ledger)
    assert _splits(back).equals(before), "the ledger remembers deleted content"


def test_grown_split_is_independent_of_file_order(first_split, grown):
    ordered = stratified_group_split(
        grown["manifest"], FRACTIONS, seed=0, previous=first_split.ledger
    )
    shuffled = stratified_group_split(
        grown["manifest"].sample(frac=1.0, random_state=5),
        FRACTIONS,
        seed=0,
        previous=first_split.ledger.sample(frac=1.0, random_state=6),
    )
    pd.testing.assert_frame_equal(ordered.table, shuffled.table)


# Hand-made hashes put images exactly so many bits apart.


def _random_hash(rng: np.random.Generator) -> str:
    return bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex()


def _flip(hex_hash: str, bits: range | list[int]) -> str:
    value = bytearray(bytes.fromhex(hex_hash))
    for bit in bits:
        value[bit // 8] ^= 1 << (bit % 8)
    return value.hex()


def _row(path: str, label: str, phash: str, content: str | None = None) -> dict:
    digest = hashlib.sha256((content or path).encode()).hexdigest()
    return {"path": path, "label": label, "sha256": digest, "phash": phash, "status": "ok"}


def _hashed_manifest(per_class: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        [
            _row(f"{label}/{i}.png", label, _random_hash(rng))
            for label in "ab"
            for i in range(per_class)
        ]
    )


def _ledger_with(result: SplitResult, splits: dict[str, str]) -> pd.DataFrame:
    """The ledger of `result` with the content of the given paths put in the given splits."""
    digests = result.table.set_index("path").loc[list(splits), "sha256"]
    ledger = result.ledger.set_index("sha256")
    ledger.loc[digests.to_numpy(), "split"] = list(splits.values())
    return ledger.reset_index()


def test_new_image_bridging_two_splits_is_excluded_and_reported():
    manifest = _hashed_manifest()
    anchor = manifest.loc[0, "phash"]
    manifest.loc[1, "phash"] = _flip(anchor, range(12))  # 12 bits away: its own group
    first = stratified_group_split(manifest, FRACTIONS, seed=0)
    a, b = manifest.loc[0, "path"], manifest.loc[1, "path"]
    previous = _ledger_with(first, {a: "train", b: "test"})
    newcomers = pd.DataFrame(
        [
            _row("a/bridge.png", "a", _flip(anchor, range(6))),  # 6 from both
            _row("a/chain1.png", "a", _flip(anchor, range(4))),  # 4 from a, 8 from b
            _row("a/chain2.png", "a", _flip(anchor, range(9))),  # 5 from chain1, 3 from b
            _row("a/near_a.png", "a", _flip(anchor, [200, 201, 202])),  # 3 from a only
        ]
    )
    result = stratified_group_split(
        pd.concat([manifest, newcomers]), FRACTIONS, seed=0, previous=previous
    )
    splits = _splits(result)
    assert set(result.bridging["path"]) == {"a/bridge.png", "a/chain1.png", "a/chain2.png"}
    assert set(result.bridging["splits"]) == {"test, train"}
    assert (splits[a], splits[b], splits["a/near_a.png"]) == ("train", "test", "train")
    assert not splits.index.isin(result.bridging["path"]).any()
    assert result.table.groupby("group")["split"].nunique().max() == 1


def test_new_groups_bring_a_skewed_class_back_toward_the_fractions():
    manifest = _hashed_manifest(per_class=20)
    first = stratified_group_split(manifest, FRACTIONS, seed=0)
    previous = _ledger_with(first, dict.fromkeys(manifest.loc[:19, "path"], "train"))
    rng = np.random.default_rng(1)
    more = pd.DataFrame([_row(f"a/new{i}.png", "a", _random_hash(rng)) for i in range(20)])
    result = stratified_group_split(
        pd.concat([manifest, more]), FRACTIONS, seed=0, previous=previous
    )
    new = result.table[result.table["path"].str.startswith("a/new")]
    # class a now has 40 images: targets 28/8/4, of which 20 were already in train
    assert new["split"].value_counts().to_dict() == {"train": 8, "val": 8, "test": 4}


def test_new_copy_with_another_label_is_excluded_and_the_old_image_stays(first_split, manifest):
    old = first_split.table.iloc[0]
    other_label = "brain_menin" if old["label"] != "brain_menin" else "brain_glioma"
    copy = old[["path", "sha256", "phash", "status"]].to_dict()
    copy.update(path=f"x/{other_label}/copy.jpg", label=other_label)
    result = stratified_group_split(
        pd.concat([manifest, pd.DataFrame([copy])]), FRACTIONS, seed=0, previous=first_split.ledger
    )
    assert list(result.conflicts["path"]) == [copy["path"]]
    assert _splits(result)[old["path"]] == old["split"]


def test_image_moved_to_another_class_folder_keeps_its_split(first_split, manifest):
    old = first_split.table.iloc[0]
    other_label = "brain_menin" if old["label"] != "brain_menin" else "brain_glioma"
    moved = manifest.copy()
    moved.loc[moved["path"] == old["path"], "label"] = other_label
    result = stratified_group_split(moved, FRACTIONS, seed=0, previous=first_split.ledger)
    row = result.table.set_index("path").loc[old["path"]]
    assert (row["split"], row["label"], row["assignment"]) == (
        old["split"],
        other_label,
        JOINED_GROUP,
    )
    assert result.ledger.set_index("sha256").loc[old["sha256"], "label"] == other_label


def test_near_duplicates_assigned_to_two_splits_by_earlier_runs_are_a_clear_error():
    manifest = _hashed_manifest()
    manifest.loc[1, "phash"] = _flip(manifest.loc[0, "phash"], range(3))
    apart = manifest.assign(
        phash=manifest["phash"].where(manifest.index != 1, _random_hash(np.random.default_rng(9)))
    )
    first = stratified_group_split(apart, FRACTIONS, seed=0)
    a, b = manifest.loc[0, "path"], manifest.loc[1, "path"]
    previous = _ledger_with(first, {a: "train", b: "test"})
    with pytest.raises(SplitConfigError, match="earlier runs assigned to different splits"):
        stratified_group_split(manifest, FRACTIONS, seed=0, previous=previous)


def test_a_class_whose_every_image_is_also_in_another_class_folder_is_said_not_dropped(manifest):
    menin = manifest[manifest["label"] == "brain_menin"]
    copied = menin.assign(
        label="brain_tumor", path=menin["path"].str.replace("brain_menin", "brain_tumor")
    )
    without_tumor = manifest[manifest["label"] != "brain_tumor"]
    with pytest.raises(SplitConfigError) as refused:
        stratified_group_split(pd.concat([without_tumor, copied]), FRACTIONS, seed=0)
    said = str(refused.value)
    assert said.startswith("class 'brain_menin' has no image left: each of its 30 images")
    assert "has the content of an image of brain_tumor too" in said


def test_many_small_classes_that_leave_a_split_empty_are_named(manifest):
    """80 distinct images are plenty for a 10% test split, but not 2 per class."""
    tiny = manifest[manifest["status"] == "ok"].head(80).reset_index(drop=True)
    tiny = tiny.assign(
        label=[f"class_{i // 2:02d}" for i in range(len(tiny))],
        path=[f"class_{i // 2:02d}/{i}.jpg" for i in range(len(tiny))],
    )
    with pytest.raises(SplitConfigError) as refused:
        stratified_group_split(tiny, FRACTIONS, seed=0)
    said = str(refused.value)
    assert said.startswith("80 usable images leave the ")
    assert "the smallest classes hold few groups (class_00 (2), class_01 (2), class_02 (2))" in said
