from pathlib import Path

import pytest

from bcc_pipeline.data.manifest import DataFolderError, require_usable, scan_folder
from bcc_pipeline.sample_data import CLASS_FOLDERS, KAGGLE_SUBDIR


def _all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_every_file_is_accounted_for_with_a_reason(messy_root):
    root, expected = messy_root
    manifest = scan_folder(root)
    assert set(manifest["path"]) == _all_files(root)
    statuses = dict(zip(manifest["path"], manifest["status"], strict=True))
    for path, status in expected.items():
        assert statuses[path] == status, path
    rejected = manifest[manifest["status"] != "ok"]
    assert (rejected["error"] != "").all()


def test_kaggle_nesting_yields_the_class_folder_names(sample_root):
    manifest = scan_folder(sample_root)
    assert sorted(manifest["label"].unique()) == sorted(CLASS_FOLDERS)
    assert (manifest["status"] == "ok").all()
    assert manifest["sha256"].str.len().eq(64).all()
    assert manifest["path"].str.startswith(KAGGLE_SUBDIR.as_posix()).all()
    assert set(manifest["width"]) == {128}


def test_flat_imagefolder_root_works(sample_root, tmp_path):
    flat = tmp_path / "flat"
    for folder in (sample_root / KAGGLE_SUBDIR).iterdir():
        target = flat / folder.name.removeprefix("brain_")
        target.mkdir(parents=True)
        for image in list(folder.glob("*.jpg"))[:3]:
            (target / image.name).write_bytes(image.read_bytes())
    manifest = scan_folder(flat)
    assert sorted(manifest["label"].unique()) == ["glioma", "menin", "tumor"]


def test_unusual_valid_images_keep_their_mode(messy_root):
    root, _ = messy_root
    manifest = scan_folder(root).set_index("path")
    prefix = KAGGLE_SUBDIR.as_posix()
    assert manifest.loc[f"{prefix}/brain_menin/sixteen_bit.png", "mode"].startswith("I")
    assert manifest.loc[f"{prefix}/brain_tumor/with_alpha.png", "mode"] == "RGBA"
    assert manifest.loc[f"{prefix}/brain_tumor/with_alpha.png", "label"] == "brain_tumor"


def test_image_outside_any_class_folder_is_rejected(sample_root, tmp_path):
    root = tmp_path / "loose"
    root.mkdir()
    image = next((sample_root / KAGGLE_SUBDIR / "brain_glioma").glob("*.jpg"))
    (root / "loose.jpg").write_bytes(image.read_bytes())
    manifest = scan_folder(root)
    assert manifest.iloc[0]["status"] == "no_class_folder"


def test_missing_folder_says_how_to_get_data(tmp_path):
    with pytest.raises(DataFolderError, match="sample-data"):
        scan_folder(tmp_path / "nowhere")


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataFolderError, match="empty"):
        scan_folder(tmp_path)


def test_no_images_and_single_class_are_clear_errors(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    with pytest.raises(DataFolderError, match="no readable images"):
        require_usable(scan_folder(tmp_path), tmp_path)


def test_single_class_is_a_clear_error(sample_root, tmp_path):
    only = tmp_path / "only" / "brain_glioma"
    only.mkdir(parents=True)
    image = next((sample_root / KAGGLE_SUBDIR / "brain_glioma").glob("*.jpg"))
    (only / image.name).write_bytes(image.read_bytes())
    with pytest.raises(DataFolderError, match="only one class"):
        require_usable(scan_folder(tmp_path / "only"), tmp_path / "only")
