import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from bcc_pipeline.assets.report import test_metrics_report as report_asset
from bcc_pipeline.data.tensors import TensorSplits
from bcc_pipeline.ml.checkpoint import read_checkpoint
from bcc_pipeline.ml.report_folder import PREDICTIONS_FILE
from bcc_pipeline.storage import write_parquet
from bcc_pipeline_tests.assets.conftest import materialization, resources
from bcc_pipeline_tests.conftest import (
    PER_CLASS_KEYS,
    REPORT_KEYS,
    save_tiny_checkpoint,
    tiny_net,
)

# The shared pipeline run trains a model.
pytestmark = pytest.mark.slow


def test_report_is_complete_and_agrees_with_the_split(pipeline_run):
    result = pipeline_run.result
    metadata = materialization(result, "test_metrics_report")
    report_path = Path(metadata["artifact_path"])
    report = json.loads(report_path.read_text())
    assert set(report) == REPORT_KEYS | {"provenance"}
    assert all(set(scores) == PER_CLASS_KEYS for scores in report["per_class"].values())
    split = pd.read_parquet(materialization(result, "stratified_split")["artifact_path"])
    test_rows = split[split["split"] == "test"]
    assert report["n_test"] == len(test_rows)
    matrix = report["confusion_matrix"]
    assert [sum(row) for row in matrix] == [
        int((test_rows["label"] == name).sum()) for name in report["class_names"]
    ]
    correct = sum(matrix[i][i] for i in range(len(matrix)))
    assert abs(report["accuracy"] - correct / report["n_test"]) < 1e-6
    assert metadata["accuracy"] == round(report["accuracy"], 4)
    for name in ("report.md", "confusion_matrix.png", "per_class.png", "reliability.png"):
        assert (report_path.parent / name).stat().st_size > 0
    assert metadata["report"].count("data:image/png;base64,") == 4, "with reliability and maps"


def test_the_test_predictions_beside_the_report_reproduce_its_confusion_matrix(pipeline_run):
    """production_model compares these with the production model's answers, so they must be
    the report's own predictions, one per test image in the tensors' order."""
    result = pipeline_run.result
    report_path = Path(result.output_for_node("test_metrics_report"))
    report = json.loads(report_path.read_text())
    predictions = np.load(report_path.with_name(PREDICTIONS_FILE))
    tensors = TensorSplits.open(result.output_for_node("preprocessed_tensors"))
    labels = tensors.labels("test")
    assert predictions.shape == labels.shape
    classes = len(report["class_names"])
    matrix = np.zeros((classes, classes), dtype=int)
    np.add.at(matrix, (labels, predictions), 1)
    assert matrix.tolist() == report["confusion_matrix"]


def test_report_is_calibrated_with_the_checkpoints_temperature(pipeline_run):
    result = pipeline_run.result
    report = json.loads(Path(result.output_for_node("test_metrics_report")).read_text())
    checkpoint = read_checkpoint(result.output_for_node("vit_checkpoint"))
    assert report["temperature"] == checkpoint["temperature"]
    metadata = materialization(result, "test_metrics_report")
    assert metadata["temperature"] == round(checkpoint["temperature"], 4)
    assert metadata["ece"] == round(report["ece"], 4)
    low, high = report["macro_auroc_ci95"]
    assert low <= report["macro_auroc"] <= high


def test_report_says_what_it_is_about(pipeline_run, sample_root):
    result = pipeline_run.result
    report_path = Path(result.output_for_node("test_metrics_report"))
    provenance = json.loads(report_path.read_text())["provenance"]
    assert provenance["data_dir"] == str(sample_root.resolve())
    assert provenance["backbone"] == "vit_tiny" and provenance["weights"] == "none"
    assert provenance["run_id"] == provenance["model_run_id"] == result.run_id
    assert provenance["checkpoint"] == result.output_for_node("vit_checkpoint")
    split = materialization(result, "stratified_split")
    assert provenance["split_fingerprint"] == split["split_fingerprint"]
    markdown = (report_path.parent / "report.md").read_text()
    assert str(sample_root.resolve()) in markdown and split["split_fingerprint"] in markdown
    # The sample is the generator's: its images carry the mark, the manifest records it.
    assert provenance["synthetic"] is True
    assert materialization(result, "test_metrics_report")["synthetic"] is True
    assert "**SYNTHETIC**" in markdown


def test_explanation_maps_and_model_card_sit_beside_the_report(pipeline_run):
    result = pipeline_run.result
    metadata = materialization(result, "test_metrics_report")
    folder = Path(metadata["artifact_path"]).parent
    maps = sorted((folder / "explanations").glob("*.png"))
    # 9 test images, 3 per class: 2 sampled per class, plus the misclassified ones.
    assert 6 <= len(maps) == metadata["explanation_maps"] <= 9
    assert (folder / "explanation_grid.png").stat().st_size > 0
    card = (folder / "model_card.md").read_text()
    assert metadata["model_card"] == card
    assert "not for clinical diagnosis" in card and "| brain_tumor |" in card


def _evaluate(result, tmp_path, **inputs) -> None:
    """test_metrics_report called directly on the run's upstream, `inputs` replaced."""
    run = resources(Path("."), tmp_path / "artifacts")
    upstream = {
        name: result.output_for_node(name)
        for name in ("vit_checkpoint", "preprocessed_tensors", "stratified_split")
    }
    report_asset(
        dg.build_asset_context(),
        launch_checks=run["launch_checks"],
        accelerator=run["accelerator"],
        artifacts=run["artifacts"],
        dataset=run["dataset"],
        tracking=run["tracking"],
        **{**upstream, **inputs},
    )


class _Paths(dg.IOManager):
    """Hands the report the upstream paths it is given, as the upstream assets would."""

    def __init__(self, paths: dict[str, str]) -> None:
        self.paths = paths

    def handle_output(self, context: dg.OutputContext, obj: str) -> None:
        pass

    def load_input(self, context: dg.InputContext) -> str:
        return self.paths[context.asset_key.path[-1]]


def test_a_checkpoint_of_another_split_is_never_evaluated(pipeline_run, tmp_path):
    """A model trained on another split has seen some of these test images."""
    other = save_tiny_checkpoint(tmp_path / "model.pt", extra={"split_fingerprint": "0123abcd"})
    with pytest.raises(dg.Failure, match="would leak training images"):
        _evaluate(pipeline_run.result, tmp_path, vit_checkpoint=str(other))
    assert not (tmp_path / "artifacts").exists(), "nothing is written for a refused model"


def test_a_checkpoint_for_another_image_size_is_refused_before_any_forward_pass(
    pipeline_run, tmp_path
):
    """Tensors re-materialized at another size: a CNN would quietly be evaluated at a size it
    never trained on, a ViT fail deep in torchvision."""
    tensors = TensorSplits.open(pipeline_run.result.output_for_node("preprocessed_tensors"))
    other_size = tiny_net(image_size=tensors.image_size + 16)
    other = save_tiny_checkpoint(
        tmp_path / "model.pt", other_size, extra={"split_fingerprint": tensors.fingerprint}
    )
    with pytest.raises(dg.Failure, match=f"takes {tensors.image_size + 16} px images, but the"):
        _evaluate(pipeline_run.result, tmp_path, vit_checkpoint=str(other))
    assert not (tmp_path / "artifacts").exists()


def test_a_split_table_of_another_split_is_refused(pipeline_run, tmp_path):
    """The duplicate groups of the AUROC interval must be those of the evaluated split."""
    table = pd.read_parquet(pipeline_run.result.output_for_node("stratified_split"))
    table["split"] = table["split"].sample(frac=1.0, random_state=0).to_numpy()
    other = write_parquet(tmp_path / "split.parquet", table)
    with pytest.raises(dg.Failure, match="re-materialize preprocessed_tensors"):
        _evaluate(pipeline_run.result, tmp_path, stratified_split=str(other))
    assert not (tmp_path / "artifacts").exists()


def test_the_auroc_interval_resamples_the_split_tables_duplicate_groups(pipeline_run, tmp_path):
    """With every test image of a class in one duplicate group there is nothing to resample,
    so there is no interval. Counted image by image, there would be one."""
    result = pipeline_run.result
    table = pd.read_parquet(result.output_for_node("stratified_split"))
    test = table["split"] == "test"
    table.loc[test, "group"] = "all-" + table.loc[test, "label"]
    one_group_per_class = str(write_parquet(tmp_path / "split.parquet", table))
    upstream = {
        name: result.output_for_node(name) for name in ("vit_checkpoint", "preprocessed_tensors")
    }
    upstream["stratified_split"] = one_group_per_class
    run = dg.materialize(
        [report_asset, *(dg.AssetSpec(name) for name in upstream)],
        resources={**resources(Path("."), tmp_path), "io_manager": _Paths(upstream)},
    )
    report = json.loads(Path(run.output_for_node("test_metrics_report")).read_text())
    assert report["macro_auroc"] is not None and report["macro_auroc_ci95"] is None
    original = json.loads(Path(result.output_for_node("test_metrics_report")).read_text())
    low, high = original["macro_auroc_ci95"]
    assert high > low
