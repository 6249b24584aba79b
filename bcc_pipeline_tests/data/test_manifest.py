import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bcc_pipeline.data.manifest import (
    BAD_NAME,
    OS_FILE_NAMES,
    OUTSIDE_CLASS_FOLDERS,
    DataFolderError,
    folder_fingerprint,
    require_usable,
    scan_folder,
)
from bcc_pipeline.sample_data import CLASS_FOLDERS, KAGGLE_SUBDIR
from bcc_pipeline.storage import write_parquet
from bcc_pipeline_tests.data.test_images import FUZZ_SEEDS


def _write_bytes_name(folder: Path, name: bytes, data: bytes | None) -> None:
    """Create a file (or, with data None, a folder) whose name is raw bytes, as a zip made on
    Windows leaves them; skip where the file system refuses such names (macOS)."""
    path = os.path.join(os.fsencode(folder), name)
    try:
        if data is None:
            os.mkdir(path)
        else:
            with open(path, "wb") as handle:
                handle.write(data)
    except OSError as err:
        pytest.skip(f"this file system refuses non-UTF-8 names: {err}")


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
    assert manifest.iloc[0]["status"] == OUTSIDE_CLASS_FOLDERS


def test_stray_images_beside_and_above_the_class_folders_do_not_become_classes(
    sample_root, tmp_path
):
    root = tmp_path / "data"
    shutil.copytree(sample_root, root)
    image = next((root / KAGGLE_SUBDIR / "brain_glioma").glob("*.jpg")).read_bytes()
    stray = {
        KAGGLE_SUBDIR.parent / "cover.jpg": image,  # above: its folder would become a class
        KAGGLE_SUBDIR / "beside.jpg": image,
        Path("misc") / "holiday" / "photo.jpg": image,  # a folder of its own elsewhere
    }
    for path, data in stray.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    manifest = scan_folder(root).set_index("path")
    assert sorted(manifest.loc[manifest["status"] == "ok", "label"].unique()) == list(CLASS_FOLDERS)
    for path in stray:
        assert manifest.loc[path.as_posix(), "status"] == OUTSIDE_CLASS_FOLDERS
        assert "brain_glioma, brain_menin, brain_tumor" in manifest.loc[path.as_posix(), "error"]


def test_named_class_folders_are_exactly_the_classes(sample_root):
    manifest = scan_folder(sample_root, class_folders=["brain_glioma", "Brain_Cancer/brain_menin"])
    by_status = manifest.groupby("status")["label"].agg(set).to_dict()
    assert by_status["ok"] == {"brain_glioma", "brain_menin"}
    assert (manifest["status"] == OUTSIDE_CLASS_FOLDERS).sum() == 30
    with pytest.raises(DataFolderError, match="'brain_healthy'.*is not a folder holding files"):
        scan_folder(sample_root, class_folders=["brain_healthy"])


def test_a_class_folder_name_that_matches_two_folders_is_refused(sample_root, tmp_path):
    root = tmp_path / "data"
    for site in ("site_a", "site_b"):
        shutil.copytree(sample_root / KAGGLE_SUBDIR, root / site)
    with pytest.raises(DataFolderError, match="matches 2 folders"):
        scan_folder(root, class_folders=["brain_glioma", "brain_menin"])
    manifest = scan_folder(root, class_folders=["site_a/brain_glioma", "site_b/brain_menin"])
    assert set(manifest.loc[manifest["status"] == "ok", "label"]) == {"brain_glioma", "brain_menin"}


def test_a_non_utf8_name_is_a_bad_name_row_that_parquet_can_store(sample_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(sample_root, root)
    glioma = root / KAGGLE_SUBDIR / "brain_glioma"
    image = next(glioma.glob("*.jpg")).read_bytes()
    _write_bytes_name(glioma, b"scan\xff.jpg", image)
    _write_bytes_name(root / KAGGLE_SUBDIR, b"caf\xe9", None)
    _write_bytes_name(root / KAGGLE_SUBDIR / "caf\udce9", b"ok.jpg", image)
    manifest = scan_folder(root)
    write_parquet(tmp_path / "manifest.parquet", manifest)  # raised UnicodeEncodeError before
    bad = manifest[manifest["status"] == BAD_NAME].set_index("path")
    prefix = KAGGLE_SUBDIR.as_posix()
    assert sorted(bad.index) == [
        f"{prefix}/brain_glioma/scan\\xff.jpg",
        f"{prefix}/caf\\xe9/ok.jpg",
    ]
    assert bad["error"].str.contains("not valid UTF-8").all()
    assert (manifest["status"] == "ok").sum() == 90


def test_a_large_file_is_too_large_and_not_read(sample_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(sample_root, root)
    big = root / KAGGLE_SUBDIR / "brain_glioma" / "scan.tif"
    with big.open("wb") as handle:
        handle.write(b"II*\x00")
        handle.truncate(2**30)  # sparse: reading it whole would cost 1 GiB
    manifest = scan_folder(root, max_file_bytes=2**20).set_index("path")
    row = manifest.loc[big.relative_to(root).as_posix()]
    assert (row["status"], row["bytes"], row["sha256"]) == ("too_large", 2**30, "")
    assert row["error"] == "1,073,741,824 bytes, above the limit of 1,048,576 bytes per file"


def test_a_folder_that_cannot_be_listed_is_a_row_not_a_silent_gap(sample_root, monkeypatch):
    # Simulated: file modes do not stop root, whom the tests may run as.
    locked = sample_root / KAGGLE_SUBDIR / "brain_menin"
    scandir = os.scandir

    def refuse_locked(path="."):
        if Path(os.fsdecode(path)) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    manifest = scan_folder(sample_root).set_index("path")
    row = manifest.loc[f"{KAGGLE_SUBDIR.as_posix()}/brain_menin/"]
    assert row["status"] == "unreadable"
    assert row["error"].startswith("cannot list this folder (Permission denied)")
    assert len(manifest) == 61 and manifest.index.is_monotonic_increasing


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


def test_a_folder_without_readable_images_says_what_its_files_are(sample_root, tmp_path):
    dicoms = tmp_path / "dicoms"
    for label in ("glioma", "menin"):
        (dicoms / label).mkdir(parents=True)
        (dicoms / label / "slice.dcm").write_bytes(DICOM)
    with pytest.raises(DataFolderError) as refused:
        require_usable(scan_folder(dicoms), dicoms)
    assert "a DICOM file (export the slices as PNG or JPEG)" in str(refused.value)
    assert "one folder per class" not in str(refused.value)
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(next(sample_root.rglob("*.jpg")), loose / "a.jpg")
    with pytest.raises(DataFolderError, match="Images must sit in one folder per class"):
        require_usable(scan_folder(loose), loose)


def test_single_class_is_a_clear_error(sample_root, tmp_path):
    only = tmp_path / "only" / "brain_glioma"
    only.mkdir(parents=True)
    image = next((sample_root / KAGGLE_SUBDIR / "brain_glioma").glob("*.jpg"))
    (only / image.name).write_bytes(image.read_bytes())
    with pytest.raises(DataFolderError, match="only one class"):
        require_usable(scan_folder(tmp_path / "only"), tmp_path / "only")


FILE_NAME_BYTES = st.binary(min_size=1, max_size=60).filter(
    lambda name: b"/" not in name and b"\0" not in name and name not in (b".", b"..")
)


@settings(max_examples=40, deadline=None)
@given(names=st.lists(FILE_NAME_BYTES, min_size=1, max_size=6, unique=True))
def test_any_file_names_give_one_storable_row_each(names):
    image = FUZZ_SEEDS["png"]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "glioma").mkdir()
        for name in names:
            _write_bytes_name(root / "glioma", name, image)
        manifest = scan_folder(root)
        write_parquet(root.parent / f"{root.name}.parquet", manifest)
        (root.parent / f"{root.name}.parquet").unlink()
        assert len(manifest) == len(names) and manifest["path"].is_unique
        for row in manifest.itertuples():
            if row.status == BAD_NAME:
                continue
            name = row.path.removeprefix("glioma/")
            is_os_file = name.lower() in OS_FILE_NAMES or name.startswith("._")
            assert row.status == ("os_file" if is_os_file else "ok")
            assert row.label == "glioma" or row.status == "os_file"
            assert (root / row.path).read_bytes() == image, "the path names the very file"
        assert folder_fingerprint(root)


@settings(max_examples=60, deadline=None)
@given(content=st.binary(max_size=300) | st.sampled_from(list(FUZZ_SEEDS.values())))
def test_any_file_content_gives_a_status(content):
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "glioma").mkdir()
        (Path(folder) / "glioma" / "scan.jpg").write_bytes(content)
        (row,) = scan_folder(folder).itertuples()
    assert row.status in {"ok", "empty", "not_an_image", "unreadable", "too_large"}
    assert (row.error == "") == (row.status == "ok")


def test_generated_images_are_recorded_as_synthetic_and_no_other_file_is(messy_root):
    root, _ = messy_root
    glioma = root / KAGGLE_SUBDIR / "brain_glioma"
    with Image.open(glioma / "brain_glioma_0001.jpg") as generated:
        pixels = np.asarray(generated)
    Image.fromarray(pixels).save(glioma / "same_pixels.jpg", format="JPEG")  # no mark
    manifest = scan_folder(root)
    generated = manifest["path"].str.contains(r"/brain_\w+_\d{4}\.jpg$")
    assert generated.sum() == 90
    assert manifest.loc[generated, "synthetic"].all()
    assert not manifest.loc[~generated, "synthetic"].any()
    assert manifest["synthetic"].dtype == bool


def test_entries_that_are_no_regular_file_are_rows_not_silent_gaps(sample_root, tmp_path):
    """A dataset assembled from links loses nothing without a word when a drive is gone."""
    folder = tmp_path / "brain_glioma"
    shutil.copytree(sample_root / KAGGLE_SUBDIR / "brain_glioma", folder)
    (folder / "gone.jpg").symlink_to(tmp_path / "unmounted" / "slice.jpg")
    (folder / "loop.jpg").symlink_to("loop.jpg")
    (folder / "device.jpg").symlink_to("/dev/null")
    os.mkfifo(folder / "pipe.jpg")
    manifest = scan_folder(tmp_path).set_index("path")
    said = {
        "gone.jpg": f"a symbolic link to {tmp_path}/unmounted/slice.jpg, which does not exist",
        "loop.jpg": "a symbolic link to loop.jpg that cannot be followed",
        "device.jpg": "a symbolic link to /dev/null, which is not a regular file",
        "pipe.jpg": "not a regular file (a pipe, socket or device)",
    }
    for name, error in said.items():
        row = manifest.loc[f"brain_glioma/{name}"]
        assert row["status"] == "unreadable" and row["error"].startswith(error), name
    assert (manifest["status"] == "ok").sum() == len(list(folder.glob("*"))) - len(said)


def _classes_linked_to(sample_root: Path, root: Path, linked: dict[str, str]) -> Path:
    """A data folder of real class folders, save those in `linked` (name -> class): links to a
    shared copy of that class outside the data folder, as clusters keep them."""
    classes = sample_root / KAGGLE_SUBDIR
    for name in CLASS_FOLDERS:
        if name not in linked.values():
            shutil.copytree(classes / name, root / "data" / name)
    for name, class_name in linked.items():
        shared = root / "shared" / class_name
        if not shared.exists():
            shutil.copytree(classes / class_name, shared)
        (root / "data" / name).symlink_to(shared, target_is_directory=True)
    return root / "data"


def test_a_linked_class_folder_is_read_and_labelled_like_a_real_one(sample_root, tmp_path):
    data = _classes_linked_to(sample_root, tmp_path, {"brain_tumor": "brain_tumor"})
    manifest = scan_folder(data)
    assert (manifest["status"] == "ok").all() and len(manifest) == 90
    tumor = manifest[manifest["label"] == "brain_tumor"]
    assert len(tumor) == 30 and tumor["path"].str.startswith("brain_tumor/").all()
    named = scan_folder(data, class_folders=["brain_tumor", "brain_glioma"])
    assert set(named.loc[named["status"] == "ok", "label"]) == {"brain_tumor", "brain_glioma"}
    before = folder_fingerprint(data)
    (tmp_path / "shared" / "brain_tumor" / "new.jpg").write_bytes(FUZZ_SEEDS["png"])
    assert folder_fingerprint(data) != before, "the sensor sees new files in a linked folder"


def test_a_link_to_a_folder_that_holds_it_is_a_loop_row_not_a_walk_without_end(
    sample_root, tmp_path
):
    data = tmp_path / "data"
    shutil.copytree(sample_root / KAGGLE_SUBDIR, data)
    loops = {
        "brain_glioma/up": "..",
        "brain_menin/data_dir": str(data),
        "brain_tumor/above_data_dir": str(tmp_path),  # would read all beside data_dir
    }
    for path, target in loops.items():
        (data / path).symlink_to(target, target_is_directory=True)
    manifest = scan_folder(data).set_index("path")
    assert (manifest["status"] == "ok").sum() == 90 and len(manifest) == 93
    for path, target in loops.items():
        assert manifest.loc[path, "status"] == "unreadable", path
        assert manifest.loc[path, "error"] == (
            f"a symbolic link to {target}, a folder that holds this path: a loop; not followed"
        )


def test_a_folder_reached_by_two_paths_is_read_once_where_it_really_is(sample_root, tmp_path):
    data = _classes_linked_to(
        sample_root, tmp_path, {"brain_menin": "brain_menin", "menin_copy": "brain_menin"}
    )
    (data / "a_glioma").symlink_to("brain_glioma")  # sorts first; the real folder is read
    manifest = scan_folder(data).set_index("path")
    assert (manifest["status"] == "ok").sum() == 90 and len(manifest) == 92
    assert manifest.loc[manifest["status"] == "ok", "label"].value_counts().to_dict() == {
        name: 30 for name in CLASS_FOLDERS
    }
    shared = tmp_path / "shared" / "brain_menin"
    said = {
        "menin_copy": f"a symbolic link to {shared}, a folder that is read already as "
        "brain_menin/; not read again",
        "a_glioma": "a symbolic link to brain_glioma, a folder that is read already as "
        "brain_glioma/; not read again",
    }
    for path, error in said.items():
        assert (manifest.loc[path, "status"], manifest.loc[path, "error"]) == ("unreadable", error)


def test_a_linked_folder_that_cannot_be_listed_is_a_row(sample_root, tmp_path, monkeypatch):
    data = _classes_linked_to(sample_root, tmp_path, {"brain_tumor": "brain_tumor"})
    scandir = os.scandir

    def refuse_the_link(path="."):
        if Path(os.fsdecode(path)) == data / "brain_tumor":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_the_link)
    manifest = scan_folder(data).set_index("path")
    row = manifest.loc["brain_tumor/"]
    assert row["status"] == "unreadable" and len(manifest) == 61
    assert row["error"].startswith("cannot list this folder (Permission denied)")


def _copy_classes(sample_root: Path, root: Path, folders: dict[str, str], per_class: int) -> None:
    """`per_class` sample images of each class (glioma, menin, tumor) into root/<folder>."""
    for label, folder in folders.items():
        target = root / folder
        target.mkdir(parents=True, exist_ok=True)
        for image in sorted((sample_root / KAGGLE_SUBDIR / f"brain_{label}").glob("*.jpg"))[
            :per_class
        ]:
            shutil.copy(image, target / image.name)


DICOM = bytes(128) + b"DICM" + bytes(64)


@pytest.mark.parametrize("named", [False, True])
def test_a_class_folder_without_one_readable_image_fails_instead_of_vanishing(
    sample_root, tmp_path, named
):
    root = tmp_path / "data"
    _copy_classes(sample_root, root, {"glioma": "glioma", "menin": "menin"}, 5)
    (root / "tumor").mkdir()
    for number in range(3):
        (root / "tumor" / f"slice{number}.dcm").write_bytes(DICOM)
    manifest = scan_folder(root, class_folders=["glioma", "menin", "tumor"] if named else ())
    assert set(manifest.loc[manifest["path"].str.startswith("tumor/"), "label"]) == {"tumor"}
    with pytest.raises(DataFolderError) as refused:
        require_usable(manifest, root)
    said = str(refused.value)
    assert said.startswith("class folder 'tumor' holds 3 files but no readable image")
    assert "'not_an_image': 3" in said and "a DICOM file" in said


def test_files_in_metadata_folders_are_os_files_and_never_classes(sample_root, tmp_path):
    root = tmp_path / "data"
    _copy_classes(sample_root, root, {"glioma": "glioma", "menin": "menin"}, 4)
    thumbnail = next((root / "glioma").glob("*.jpg")).read_bytes()
    debris = [
        f"{folder}/@eaDir/img{number}.jpg/SYNOPHOTO_THUMB_S.jpg"
        for folder in ("glioma", "menin")
        for number in range(6)
    ] + ["__MACOSX/glioma/._a.jpg", ".Trash-1000/files/old.jpg", "#recycle/menin/x.jpg"]
    for path in debris:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(thumbnail)
    manifest = scan_folder(root).set_index("path")
    assert set(manifest.loc[debris, "status"]) == {"os_file"}
    assert (
        "@eaDir, a folder an operating system, a NAS or a tool keeps"
        in (manifest.loc[debris[0], "error"])
    )
    assert sorted(manifest.loc[manifest["status"] == "ok", "label"].unique()) == ["glioma", "menin"]


def test_a_class_patient_slice_layout_is_refused_unless_its_class_folders_are_named(
    sample_root, tmp_path
):
    root = tmp_path / "data"
    for label in ("glioma", "menin", "tumor"):
        for patient in ("patient_00", "patient_01"):
            _copy_classes(sample_root, root, {label: f"{label}/{patient}"}, 4)
    with pytest.raises(DataFolderError) as refused:
        scan_folder(root)
    said = str(refused.value)
    assert said.startswith("cannot tell which folders are the classes")
    assert "glioma/ (8), menin/ (8), tumor/ (8)" in said and "would leave 16 of 24" in said
    manifest = scan_folder(root, class_folders=["glioma", "menin", "tumor"])
    assert (manifest["status"] == "ok").all()
    assert manifest.groupby("label").size().to_dict() == {"glioma": 8, "menin": 8, "tumor": 8}


def test_class_folders_of_a_pre_split_dataset_are_named_by_path_and_share_their_class(
    sample_root, tmp_path
):
    root = tmp_path / "data"
    for part, count in (("Training", 6), ("Testing", 3)):
        _copy_classes(sample_root, root, {"glioma": f"{part}/glioma", "menin": f"{part}/menin"}, 1)
        for label in ("glioma", "menin"):  # distinct files per part
            for number in range(count):
                source = next((root / part / label).glob("*.jpg"))
                shutil.copy(source, root / part / label / f"{number}_{source.name}")
    with pytest.raises(DataFolderError, match="cannot tell which folders are the classes"):
        scan_folder(root)
    named = [f"{part}/{label}" for part in ("Training", "Testing") for label in ("glioma", "menin")]
    manifest = scan_folder(root, class_folders=named)
    assert (manifest["status"] == "ok").all()
    assert manifest.groupby("label").size().to_dict() == {"glioma": 11, "menin": 11}


@pytest.mark.parametrize(
    ("menin", "twin"),
    [
        ("brain_menin", "brain_menin "),
        ("brain_menin", "Brain_Menin"),
        ("m\u00e9ningiome", "me\u0301ningiome"),  # é composed, and e + combining accent
        ("brain_menin", "\uff42rain_menin"),  # a full-width b
    ],
)
def test_class_folders_named_alike_are_refused_as_one_class_split_in_two(
    sample_root, tmp_path, menin, twin
):
    root = tmp_path / "data"
    _copy_classes(sample_root, root, {"glioma": "brain_glioma", "menin": menin}, 3)
    _copy_classes(sample_root, root, {"tumor": twin}, 3)
    assert len(list(root.iterdir())) == 3
    with pytest.raises(DataFolderError, match="differ only in case, spaces or Unicode form"):
        scan_folder(root)


def test_one_class_a_level_deeper_than_the_others_stops_the_scan_instead_of_vanishing(
    sample_root, tmp_path
):
    root = tmp_path / "data"
    _copy_classes(sample_root, root, {"glioma": "glioma", "tumor": "tumor"}, 6)
    _copy_classes(sample_root, root, {"menin": "menin/patient_0"}, 3)
    _copy_classes(sample_root, root, {"menin": "menin/patient_1"}, 3)
    with pytest.raises(DataFolderError, match="would leave 6 of 18 images out"):
        scan_folder(root)


def test_a_named_class_folder_is_its_exact_path_before_any_that_ends_alike(sample_root, tmp_path):
    root = tmp_path / "data"
    _copy_classes(sample_root, root, {"glioma": "glioma", "menin": "menin"}, 3)
    _copy_classes(sample_root, root, {"glioma": "old/glioma"}, 3)
    twin = next((root / "glioma").glob("*.jpg"))
    (root / "__MACOSX" / "menin").mkdir(parents=True)
    (root / "__MACOSX" / "menin" / f"._{twin.name}").write_bytes(b"\x00\x05\x16\x07")
    manifest = scan_folder(root, class_folders=["glioma", "menin\\"])
    labelled = manifest[manifest["label"] != ""]
    assert sorted(set(labelled["path"].str.split("/").str[0])) == ["glioma", "menin"]
    assert (manifest.loc[manifest["path"].str.startswith("old/"), "label"] == "").all()
