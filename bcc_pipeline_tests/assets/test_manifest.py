import dagster as dg
import pandas as pd
import pytest

from bcc_pipeline.assets.manifest import raw_image_manifest
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
