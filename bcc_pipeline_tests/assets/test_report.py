import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from bcc_pipeline.assets.report import test_metrics_report as report_asset
from bcc_pipeline_tests.assets.conftest import materialization, resources
from bcc_pipeline_tests.conftest import REPORT_KEYS, save_tiny_checkpoint

# The shared pipeline run trains a model.
pytestmark = pytest.mark.slow


def test_report_is_complete_and_agrees_with_the_split(pipeline_run):
    result = pipeline_run.result
    metadata = materialization(result, "test_metrics_report")
    report_path = Path(metadata["artifact_path"])
    report = json.loads(report_path.read_text())
    assert set(report) == REPORT_KEYS
    split = pd.read_parquet(materialization(result, "stratified_split")["artifact_path"])
    test_rows = split[split["split"] == "test"]
    assert report["n_test"] == len(test_rows)
    matrix = report["confusion_matrix"]
    assert [sum(row) for row in matrix] == [
        int((test_rows["label"] == name).sum()) for name in report["class_names"]
    ]
    correct = sum(matrix[i][i] for i in range(len(matrix)))
    assert abs(report["accuracy"] - correct / report["n_test"]) < 1e-6
    assert metadata["accuracy"] == report["accuracy"]
    for name in ("report.md", "confusion_matrix.png", "per_class.png"):
        assert (report_path.parent / name).stat().st_size > 0
    assert "data:image/png;base64," in metadata["report"]


def test_a_checkpoint_of_another_split_is_never_evaluated(pipeline_run, tmp_path):
    """A model trained on another split has seen some of these test images."""
    result = pipeline_run.result
    tensors = materialization(result, "preprocessed_tensors")["artifact_path"]
    other = save_tiny_checkpoint(tmp_path / "model.pt", extra={"split_fingerprint": "0123abcd"})
    run = resources(Path("."), tmp_path / "artifacts")
    with pytest.raises(dg.Failure, match="would leak training images"):
        report_asset(
            dg.build_asset_context(),
            launch_checks=run["launch_checks"],
            accelerator=run["accelerator"],
            artifacts=run["artifacts"],
            tracking=run["tracking"],
            vit_checkpoint=str(other),
            preprocessed_tensors=tensors,
        )
    assert not (tmp_path / "artifacts").exists(), "nothing is written for a refused model"
