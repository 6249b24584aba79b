import json
import logging
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from bcc_pipeline.data.split import SPLITS
from bcc_pipeline_tests.assets.conftest import (
    materialization,
    pipeline_assets,
    resources,
    tiny_run_config,
)

# The shared pipeline run trains a model.
pytestmark = pytest.mark.slow


def test_tensors_asset_writes_memory_mappable_splits(pipeline_run):
    result, artifacts_root = pipeline_run.result, pipeline_run.artifacts_root
    metadata = materialization(result, "preprocessed_tensors")
    folder = Path(metadata["artifact_path"])
    assert folder.parent == artifacts_root / "preprocessed_tensors"
    meta = json.loads((folder / "meta.json").read_text())
    images = np.load(folder / "train_images.npy", mmap_mode="r")
    assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32)
    assert meta["splits"]["train"]["count"] == len(images)
    assert metadata["image_size"] == 32
    split = pd.read_parquet(materialization(result, "stratified_split")["artifact_path"])
    assert sum(meta["splits"][name]["count"] for name in SPLITS) == len(split)
    assert metadata["class_names"] == sorted(split["label"].unique())


def test_an_image_overwritten_after_the_split_fails_the_tensors_with_a_message(
    sample_root, tmp_path
):
    """The UI case: the folder changes, then only the downstream assets are re-materialized."""
    data = tmp_path / "data"
    shutil.copytree(sample_root, data)
    instance = dg.DagsterInstance.ephemeral()
    assets, ops = pipeline_assets()[:3], tiny_run_config().ops
    upstream = dg.materialize(
        assets,
        selection=["raw_image_manifest", "stratified_split"],
        resources=resources(data, tmp_path / "out"),
        run_config=dg.RunConfig(ops={"stratified_split": ops["stratified_split"]}),
        instance=instance,
    )
    table = pd.read_parquet(upstream.output_for_node("stratified_split"))
    train = table[table["split"] == "train"].iloc[0]
    test = table[(table["split"] == "test") & (table["label"] == train["label"])].iloc[0]
    (data / test["path"]).write_bytes((data / train["path"]).read_bytes())
    result = dg.materialize(
        assets,
        selection=["preprocessed_tensors"],
        resources=resources(data, tmp_path / "out"),
        run_config=dg.RunConfig(ops={"preprocessed_tensors": ops["preprocessed_tensors"]}),
        instance=instance,
        raise_on_error=False,
    )
    message = result.failure_data_for_node("preprocessed_tensors").error.message
    assert "Failure: ImageChangedError: " in message
    assert test["path"] in message and "re-materialize raw_image_manifest" in message


def test_a_rerun_on_the_same_split_links_the_stored_tensors_instead_of_decoding(
    sample_root, tmp_path
):
    runs = [
        dg.materialize(
            pipeline_assets()[:3],
            resources=resources(sample_root, tmp_path / "out"),
            run_config=dg.RunConfig(ops={"preprocessed_tensors": {"config": {"image_size": 32}}}),
        )
        for _ in range(2)
    ]
    first, second = (materialization(run, "preprocessed_tensors") for run in runs)
    assert not first["reused"] and second["reused"]
    assert first["artifact_path"] != second["artifact_path"], "each run has its own folder"
    for name in ("train_images.npy", "test_labels.npy", "meta.json"):
        a, b = Path(first["artifact_path"]) / name, Path(second["artifact_path"]) / name
        assert a.stat().st_ino == b.stat().st_ino, f"{name} is linked, not copied"
    bigger = dg.materialize(
        pipeline_assets()[:3],
        resources=resources(sample_root, tmp_path / "out"),
        run_config=dg.RunConfig(ops={"preprocessed_tensors": {"config": {"image_size": 48}}}),
    )
    assert not materialization(bigger, "preprocessed_tensors")["reused"]


def _cut_short(path: Path) -> None:
    stored = path.read_bytes()
    path.unlink()  # the first run's folder keeps its link to the whole file
    path.write_bytes(stored[: len(stored) // 2])


def _one_row_fewer(path: Path) -> None:
    rows = np.load(path)
    path.unlink()
    np.save(path, rows[:-1])


def _meta_a_list(path: Path) -> None:
    meta = path.with_name("meta.json")
    meta.unlink()
    meta.write_text("[]")


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (_cut_short, "ValueError"),
        (Path.unlink, "FileNotFoundError"),
        (_one_row_fewer, "ValueError"),
        (_meta_a_list, "TypeError"),
    ],
)
def test_a_damaged_store_of_tensors_is_said_and_decoded_again(damage, error, sample_root, tmp_path):
    instance = dg.DagsterInstance.ephemeral()

    def run() -> dg.ExecuteInProcessResult:
        return dg.materialize(
            pipeline_assets()[:3],
            resources=resources(sample_root, tmp_path / "out"),
            run_config=dg.RunConfig(ops={"preprocessed_tensors": {"config": {"image_size": 32}}}),
            instance=instance,
        )

    first = Path(materialization(run(), "preprocessed_tensors")["artifact_path"])
    whole = np.load(first / "train_images.npy")
    (store,) = (tmp_path / "out" / "cache" / "tensors").iterdir()
    images = store / "train_images.npy"
    damage(images)
    healed = run()
    assert not materialization(healed, "preprocessed_tensors")["reused"]
    warnings = [
        entry.user_message
        for entry in instance.all_logs(healed.run_id)
        if entry.level == logging.WARNING
    ]
    assert len(warnings) == 1 and warnings[0].startswith(f"{store} is damaged ({error}: ")
    assert warnings[0].endswith("computing it again")
    folder = Path(materialization(healed, "preprocessed_tensors")["artifact_path"])
    np.testing.assert_array_equal(np.load(folder / "train_images.npy"), whole)
    np.testing.assert_array_equal(np.load(images), whole)
    assert [path.name for path in store.parent.iterdir()] == [store.name], "no leftovers"
