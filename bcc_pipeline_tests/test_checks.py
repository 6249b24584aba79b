"""Asset checks called directly on real artifacts, passing and failing."""

import json
import shutil

import dagster as dg
import pandas as pd
import torch

from bcc_pipeline import checks
from bcc_pipeline.data.manifest import scan_folder
from bcc_pipeline.data.split import stratified_group_split
from bcc_pipeline.ml.checkpoint import save_checkpoint
from bcc_pipeline.ml.module import BrainMRIClassifier
from bcc_pipeline.resources import QualityGatesResource
from bcc_pipeline.storage import write_parquet
from bcc_pipeline_tests.conftest import FRACTIONS


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
    rejected = checks.rejected_fraction_is_small(path, QualityGatesResource())
    assert not rejected.passed, "6 of 99 files rejected is above 5%"
    assert rejected.severity == dg.AssetCheckSeverity.WARN
    lenient = checks.rejected_fraction_is_small(
        path, QualityGatesResource(max_rejected_fraction=0.1)
    )
    assert lenient.passed


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


def test_checkpoint_checks(tmp_path):
    module = BrainMRIClassifier(["a", "b", "c"], image_size=32, backbone="vit_tiny", weights="none")
    good = save_checkpoint(tmp_path / "good.pt", module, {"metrics": {"best_val_acc": 0.6}})
    assert checks.weights_are_finite(str(good)).passed
    assert checks.validation_accuracy_above_chance(str(good)).passed
    with torch.no_grad():
        module.net.head.weight[0, 0] = float("nan")
    bad = save_checkpoint(tmp_path / "bad.pt", module, {"metrics": {"best_val_acc": 0.3}})
    assert not checks.weights_are_finite(str(bad)).passed
    assert not checks.validation_accuracy_above_chance(str(bad)).passed


def test_report_floor(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"accuracy": 0.75}))
    assert checks.accuracy_meets_floor(str(path), QualityGatesResource(accuracy_floor=0.7)).passed
    result = checks.accuracy_meets_floor(str(path), QualityGatesResource(accuracy_floor=0.8))
    assert not result.passed and "below the floor" in result.metadata["reason"].value


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
