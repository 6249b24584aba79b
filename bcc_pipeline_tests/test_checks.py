"""Asset checks called directly on real artifacts, passing and failing."""

import json
import shutil

import dagster as dg
import pandas as pd
import pytest
import torch

from bcc_pipeline import checks
from bcc_pipeline.assets.tensors import preprocessed_tensors
from bcc_pipeline.data.manifest import scan_folder
from bcc_pipeline.data.split import stratified_group_split
from bcc_pipeline.resources import QualityGatesResource
from bcc_pipeline.storage import write_parquet
from bcc_pipeline_tests.assets.conftest import resources
from bcc_pipeline_tests.conftest import FRACTIONS, save_tiny_checkpoint, tiny_net


def _manifest(messy_root, tmp_path) -> str:
    root, _ = messy_root
    return str(write_parquet(tmp_path / "manifest.parquet", scan_folder(root)))


def _split(sample_root, tmp_path) -> tuple[str, pd.DataFrame]:
    table = stratified_group_split(scan_folder(sample_root), FRACTIONS, seed=0).table
    return str(write_parquet(tmp_path / "split.parquet", table)), table


def test_manifest_checks(messy_root, tmp_path):
    path = _manifest(messy_root, tmp_path)
    enough = checks.enough_images_per_class(path, QualityGatesResource(min_images_per_class=25))
    assert enough.passed and enough.metadata["fewest"].value == 30
    too_few = checks.enough_images_per_class(path, QualityGatesResource(min_images_per_class=40))
    assert not too_few.passed
    statuses = pd.read_parquet(path)["status"]
    data = statuses[statuses != "os_file"]
    fraction = (data != "ok").mean()
    assert (data != "ok").sum() == 4 and len(data) < len(statuses), "the messy folder"
    strict = checks.rejected_fraction_is_small(
        path, QualityGatesResource(max_rejected_fraction=0.03)
    )
    assert not strict.passed and strict.metadata["rejected_fraction"].value == fraction
    assert strict.severity == dg.AssetCheckSeverity.WARN
    lenient = checks.rejected_fraction_is_small(
        path, QualityGatesResource(max_rejected_fraction=0.05)
    )
    assert lenient.passed


def test_operating_system_files_do_not_count_as_rejected_data(messy_root, tmp_path):
    before = checks.rejected_fraction_is_small(
        _manifest(messy_root, tmp_path), QualityGatesResource()
    )
    root, _ = messy_root
    for image in list(root.rglob("*.jpg"))[:50]:  # a Mac zip's twin of each image
        (image.parent / f"._{image.name}").write_bytes(b"\x00\x05\x16\x07")
    after = checks.rejected_fraction_is_small(
        _manifest(messy_root, tmp_path), QualityGatesResource()
    )
    assert after.metadata["rejected_fraction"] == before.metadata["rejected_fraction"]


def test_split_checks_pass_on_a_real_split(sample_root, tmp_path):
    path, _ = _split(sample_root, tmp_path)
    assert checks.no_leak_across_splits(path).passed
    assert checks.no_conflicting_labels(path).passed
    assert checks.split_proportions_within_tolerance(path, QualityGatesResource()).passed


def test_split_checks_catch_a_leak_and_skew(sample_root, tmp_path):
    _, table = _split(sample_root, tmp_path)
    leaked = table.copy()
    first_group = leaked["group"].iloc[0]
    twin = leaked.iloc[[0]].assign(
        path="copy.jpg", split="test" if leaked["split"].iloc[0] != "test" else "train"
    )
    leaked = pd.concat([leaked, twin], ignore_index=True)
    leaked.attrs = table.attrs
    path = str(write_parquet(tmp_path / "leaky.parquet", leaked))
    result = checks.no_leak_across_splits(path)
    assert not result.passed and first_group in result.metadata["leaking_groups"].value
    skewed = table.assign(split="train")
    skewed.attrs = table.attrs
    path = str(write_parquet(tmp_path / "skewed.parquet", skewed))
    assert not checks.split_proportions_within_tolerance(path, QualityGatesResource()).passed
    mixed = table.copy()
    mixed.loc[1, "group"] = mixed.loc[0, "group"]
    mixed.loc[1, "label"] = "brain_tumor" if mixed.loc[0, "label"] != "brain_tumor" else "x"
    path = str(write_parquet(tmp_path / "mixed.parquet", mixed))
    assert not checks.no_conflicting_labels(path).passed


def _checkpoint(tmp_path, name: str, net=None, **metrics) -> str:
    return str(save_tiny_checkpoint(tmp_path / f"{name}.pt", net, {"metrics": metrics}))


def test_weights_are_finite(tmp_path):
    net = tiny_net()
    assert checks.weights_are_finite(_checkpoint(tmp_path, "good", net)).passed
    with torch.no_grad():
        net.head.weight[0, 0] = float("nan")
    bad = checks.weights_are_finite(_checkpoint(tmp_path, "bad", net))
    assert not bad.passed and bad.metadata["non_finite"].value == ["head.weight"]


@pytest.mark.parametrize(
    ("best_val_acc", "n_val", "passed"),
    [
        (0.6, 10, True),
        (4 / 9, 9, True),
        (float(torch.tensor(1 / 3, dtype=torch.float32)), 9, False),  # 0.33333334: chance
        (0.3, 10, False),
    ],
)
def test_validation_accuracy_must_beat_chance_by_an_image(tmp_path, best_val_acc, n_val, passed):
    path = _checkpoint(tmp_path, "model", best_val_acc=best_val_acc, n_val=n_val)
    assert checks.validation_accuracy_above_chance(path).passed is passed


def test_accuracy_below_the_floor_fails_the_check_and_says_why(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"accuracy": 0.75}))
    assert checks.accuracy_meets_floor(str(path), QualityGatesResource(accuracy_floor=0.7)).passed
    result = checks.accuracy_meets_floor(str(path), QualityGatesResource(accuracy_floor=0.8))
    assert not result.passed and "below the floor" in result.metadata["reason"].value


def test_a_leaking_split_stops_the_run_before_the_tensors(sample_root, tmp_path):
    """no_leak_across_splits is blocking: nothing downstream of a leaking split runs."""
    data = tmp_path / "data"
    shutil.copytree(sample_root, data)
    _, table = _split(data, tmp_path)
    (data / "copy.jpg").write_bytes((data / table["path"].iloc[0]).read_bytes())
    moved = table["split"].iloc[0]
    twin = table.iloc[[0]].assign(path="copy.jpg", split="test" if moved != "test" else "train")
    leaky = pd.concat([table, twin], ignore_index=True)
    leaky.attrs = table.attrs
    path = str(write_parquet(tmp_path / "leaky.parquet", leaky))

    @dg.asset(name="stratified_split")
    def leaky_split() -> str:
        return path

    result = dg.materialize(
        [leaky_split, preprocessed_tensors, checks.no_leak_across_splits],
        resources=resources(data, tmp_path / "artifacts"),
        run_config=dg.RunConfig(ops={"preprocessed_tensors": {"config": {"image_size": 32}}}),
        raise_on_error=False,
    )
    assert not result.success
    evaluation = result.get_asset_check_evaluations()[0]
    assert evaluation.check_name == "no_leak_across_splits" and not evaluation.passed
    materialized = {
        event.asset_key.to_user_string() for event in result.get_asset_materialization_events()
    }
    assert materialized == {"stratified_split"}


def test_images_outside_the_class_folders_fail_the_warning_check(sample_root, tmp_path):
    clean = str(write_parquet(tmp_path / "clean.parquet", scan_folder(sample_root)))
    assert checks.images_inside_class_folders(clean).passed
    data = tmp_path / "data"
    shutil.copytree(sample_root, data)
    shutil.copy(next(data.rglob("*.jpg")), data / "stray.jpg")
    stray = str(write_parquet(tmp_path / "stray.parquet", scan_folder(data)))
    result = checks.images_inside_class_folders(stray)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["paths"].value == ["stray.jpg"]
