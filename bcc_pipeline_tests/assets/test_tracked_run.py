"""The whole pipeline with MLflow tracking on (the default store under the artifacts root),
read back through MLflow's own client."""

import json
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from bcc_pipeline.definitions import defs
from bcc_pipeline.tracking import (
    CHECKPOINT_PATH_TAG,
    PIPELINE_RUN_TAG,
    PRODUCTION_ALIAS,
    REGISTERED_MODEL,
)
from bcc_pipeline_tests.assets.conftest import (
    ASSETS,
    materialization,
    resources,
    tiny_run_config,
)
from bcc_pipeline_tests.conftest import mlflow_store_at

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracked(sample_root, empty_mlflow_db, tmp_path_factory):
    """One run of every asset, promotion included (floor 0), tracked in the default store."""
    artifacts_root = tmp_path_factory.mktemp("tracked")
    uri = mlflow_store_at(artifacts_root / "mlflow" / "mlflow.db", empty_mlflow_db)
    result = dg.materialize(
        [defs.get_assets_def(name) for name in [*ASSETS, "production_model"]],
        resources=resources(sample_root, artifacts_root, accuracy_floor=0.0, tracking=True),
        run_config=tiny_run_config(),
    )
    assert result.success
    return result, MlflowClient(uri)


def test_a_training_run_is_one_mlflow_run_with_curves_test_metrics_and_files(tracked):
    result, client = tracked
    (experiment,) = [e for e in client.search_experiments() if e.name == "bcc_pipeline"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags[PIPELINE_RUN_TAG] == result.run_id
    for asset in ("vit_checkpoint", "test_metrics_report", "production_model"):
        assert materialization(result, asset)["mlflow_run_id"] == run.info.run_id, asset

    training = materialization(result, "vit_checkpoint")
    epochs = list(range(1, training["epochs_run"] + 1))
    for name in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == epochs
    params = run.data.params
    assert params["training.backbone"] == "vit_tiny"
    assert params["split.seed"] == "3"
    assert params["data.image_size"] == "32"
    assert params["data.split_fingerprint"] == training["split_fingerprint"]

    report_path = Path(result.output_for_node("test_metrics_report"))
    report = json.loads(report_path.read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(report["accuracy"])
    assert run.data.metrics["test_macro_f1"] == pytest.approx(report["macro_f1"])
    assert run.data.metrics["test_loss"] == pytest.approx(report["loss"])
    files = {entry.path for entry in client.list_artifacts(run.info.run_id, "report")}
    expected = {f"report/{path.name}" for path in report_path.parent.iterdir()}
    assert {"report/report.json", "report/report.md"} <= expected == files
    assert run.data.tags[CHECKPOINT_PATH_TAG] == result.output_for_node("vit_checkpoint")
    checkpoint = {entry.path for entry in client.list_artifacts(run.info.run_id, "checkpoint")}
    assert checkpoint == {"checkpoint/model.pt"}, "promoted: the registry's version needs it"


def test_the_promoted_model_is_the_registered_production_version(tracked):
    result, client = tracked
    promotion = materialization(result, "production_model")
    assert promotion["promoted"]
    version = client.get_model_version_by_alias(REGISTERED_MODEL, PRODUCTION_ALIAS)
    assert int(version.version) == promotion["mlflow_model_version"]
    assert version.run_id == promotion["mlflow_run_id"]
    assert version.tags[PIPELINE_RUN_TAG] == result.run_id
    assert version.tags["promotion_reason"] == promotion["reason"]
    assert promotion["mlflow_model_uri"] == "models:/bcc_pipeline@production"
