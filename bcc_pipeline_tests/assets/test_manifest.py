import logging
import os
import shutil
import time

import dagster as dg
import pandas as pd
import pytest

from bcc_pipeline.assets.manifest import raw_image_manifest
from bcc_pipeline.sample_data import KAGGLE_SUBDIR
from bcc_pipeline_tests.assets.conftest import (
    launch_failure,
    materialization,
    pipeline_assets,
    resources,
)


def test_manifest_records_every_file_and_the_rejections(messy_root, tmp_path):
    root, expected = messy_root
    result = dg.materialize([raw_image_manifest], resources=resources(root, tmp_path))
    metadata = materialization(result, "raw_image_manifest")
    manifest = pd.read_parquet(result.output_for_node("raw_image_manifest"))
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert set(manifest["path"]) == files
    assert metadata["artifact_path"] == result.output_for_node("raw_image_manifest")
    assert metadata["rejected_files"] == sum(s != "ok" for s in expected.values())
    assert metadata["usable_images"] + metadata["rejected_files"] == len(files)
    assert "brain_glioma" in metadata["images_per_class"]


def test_runs_write_under_their_own_run_id(sample_root, tmp_path):
    paths = set()
    for _ in range(2):
        result = dg.materialize(pipeline_assets()[:1], resources=resources(sample_root, tmp_path))
        paths.add(materialization(result, "raw_image_manifest")["artifact_path"])
    assert len(paths) == 2
    assert all(path.startswith(str(tmp_path / "raw_image_manifest")) for path in paths)


def test_missing_data_dir_stops_the_run_at_launch_saying_how_to_get_data(tmp_path):
    result = dg.materialize(
        pipeline_assets()[:1],
        resources=resources(tmp_path / "absent", tmp_path),
        raise_on_error=False,
    )
    message = launch_failure(result)
    assert "resources.dataset.config.data_dir: data folder" in message
    assert "does not exist" in message and "bcc-pipeline sample-data" in message


@pytest.mark.parametrize("layout", ["empty", "one_class"])
def test_unusable_folder_fails_clearly(tmp_path, layout, sample_root):
    data = tmp_path / "data"
    data.mkdir()
    if layout == "one_class":
        (data / "glioma").mkdir()
        source = next(sample_root.rglob("*.jpg"))
        (data / "glioma" / source.name).write_bytes(source.read_bytes())
    result = dg.materialize(
        pipeline_assets()[:1], resources=resources(data, tmp_path), raise_on_error=False
    )
    message = result.failure_data_for_node("raw_image_manifest").error.message
    assert ("empty" if layout == "empty" else "only one class") in message


def test_an_artifacts_root_under_a_file_fails_clearly_before_the_scan(tmp_path):
    """The launch check says it first (test_launch_checks); the asset itself still fails with
    the cause, not a raw OSError, when called without it."""
    (tmp_path / "taken").write_text("")
    result = dg.materialize(
        [raw_image_manifest],
        resources={
            **resources(tmp_path / "absent", tmp_path / "taken" / "artifacts"),
            "launch_checks": dg.ResourceDefinition.none_resource(),
        },
        raise_on_error=False,
    )
    message = result.failure_data_for_node("raw_image_manifest").error.message
    assert f"{tmp_path / 'taken'} is a file, not a folder" in message
    assert "does not exist" not in message, "the data folder was not looked at yet"


def test_stray_images_are_warned_about_and_counted(sample_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sample_root, data)
    stray = data / KAGGLE_SUBDIR.parent / "cover.jpg"
    shutil.copy(next(data.rglob("*.jpg")), stray)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [raw_image_manifest], resources=resources(data, tmp_path / "out"), instance=instance
    )
    assert materialization(result, "raw_image_manifest")["outside_class_folders"] == 1
    warnings = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.level == logging.WARNING
    ]
    assert len(warnings) == 1
    assert warnings[0].startswith("1 images sit outside the class folders (brain_glioma, ")
    assert "cover.jpg" in warnings[0]


def test_dataset_config_names_the_class_folders_and_the_size_limit(sample_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sample_root, data)
    big = data / KAGGLE_SUBDIR / "brain_glioma" / "big.png"
    with big.open("wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.truncate(2**20)
    result = dg.materialize(
        [raw_image_manifest],
        resources=resources(
            data,
            tmp_path / "out",
            class_folders=["brain_glioma", "brain_tumor"],
            max_file_bytes=2**19,
        ),
    )
    manifest = pd.read_parquet(result.output_for_node("raw_image_manifest")).set_index("path")
    assert manifest.loc[big.relative_to(data).as_posix(), "status"] == "too_large"
    counts = manifest.groupby(["status", "label"]).size().to_dict()
    assert counts == {
        ("ok", "brain_glioma"): 30,
        ("ok", "brain_tumor"): 30,
        ("outside_class_folders", ""): 30,
        ("too_large", "brain_glioma"): 1,
    }


def test_temp_files_of_killed_runs_are_removed_when_the_manifest_runs(sample_root, tmp_path):
    left_behind = tmp_path / "preprocessed_tensors" / "killed-run" / ".train_images.npy.ab12.tmp"
    left_behind.parent.mkdir(parents=True)
    left_behind.write_bytes(b"half an array")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(left_behind, (two_days_ago, two_days_ago))
    result = dg.materialize([raw_image_manifest], resources=resources(sample_root, tmp_path))
    assert materialization(result, "raw_image_manifest")["stale_temp_files_removed"] == 1
    assert not left_behind.exists()
