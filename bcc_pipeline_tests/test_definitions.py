"""The code location as Dagster's own CLI loads it, run the way users and CI run it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient

from bcc_pipeline.definitions import defs

REPO = Path(__file__).resolve().parent.parent
DAGSTER = str(Path(sys.executable).parent / "dagster")
DG = str(Path(sys.executable).parent / "dg")
JOB_EXECUTE = [DAGSTER, "job", "execute", "-m", "bcc_pipeline.definitions", "-j", "training_job"]
PIPELINE = [
    "raw_image_manifest",
    "stratified_split",
    "preprocessed_tensors",
    "vit_checkpoint",
    "test_metrics_report",
]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    return {**os.environ, "DAGSTER_HOME": str(home), **extra}


def test_definitions_hold_the_pipeline_in_one_group():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert set(PIPELINE) <= keys
    for name in PIPELINE:
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == "brain_mri_classifier"
        assert node.description
    job = defs.resolve_job_def("training_job")
    assert set(PIPELINE) <= {key.to_user_string() for key in job.asset_layer.selected_asset_keys}


@pytest.mark.slow
def test_data_assets_from_the_cli_with_only_paths_configured(messy_root, tmp_path):
    root, expected = messy_root
    config = (REPO / "bcc_pipeline_tests" / "data_assets.yaml").read_text()
    config_file = tmp_path / "run.yaml"
    artifacts = tmp_path / "artifacts"
    config_file.write_text(
        config.replace("DATA_DIR", str(root)).replace("ARTIFACTS_DIR", str(artifacts))
    )
    completed = subprocess.run(
        [
            DAGSTER,
            "asset",
            "materialize",
            "-m",
            "bcc_pipeline.definitions",
            "--select",
            "raw_image_manifest,stratified_split,preprocessed_tensors",
            "-c",
            str(config_file),
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    manifest = pd.read_parquet(next(artifacts.glob("raw_image_manifest/*/manifest.parquet")))
    assert len(manifest) == sum(1 for p in root.rglob("*") if p.is_file())
    statuses = dict(zip(manifest["path"], manifest["status"], strict=True))
    assert all(statuses[path] == status for path, status in expected.items())
    assert list(artifacts.glob("preprocessed_tensors/*/test_images.npy"))


def _execute_training_job(
    config: Path,
    data_dir: Path,
    tmp_path: Path,
    command: list[str] = JOB_EXECUTE,
    cwd: Path | None = None,
) -> tuple[dict, dict]:
    """`dagster job execute` as CI runs it (or `command`, from `cwd`); returns the report and
    the checkpoint."""
    artifacts = tmp_path / "artifacts"
    completed = subprocess.run(
        [*command, "-c", str(config)],
        cwd=cwd or tmp_path,
        env=_env(tmp_path, BCC_DATA_DIR=str(data_dir), BCC_ARTIFACTS_DIR=str(artifacts)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = json.loads(next(artifacts.glob("test_metrics_report/*/report.json")).read_text())
    checkpoint = torch.load(next(artifacts.glob("vit_checkpoint/*/model.pt")), weights_only=True)
    assert checkpoint["class_names"] == report["class_names"]
    return report, checkpoint


@pytest.mark.slow
def test_training_job_from_the_cli_with_the_smoke_config(sample_root, tmp_path):
    report, checkpoint = _execute_training_job(
        REPO / "configs" / "smoke.yaml", sample_root, tmp_path
    )
    assert report["n_test"] == 9
    assert checkpoint["metrics"]["world_size"] == 1


@pytest.mark.slow
def test_dg_launch_runs_ddp_steps_in_their_own_processes_into_one_mlflow_run(sample_root, tmp_path):
    """`dg launch` from the project root; each step in its own process, training on two DDP
    processes: the steps log into one MLflow run, and each epoch is logged once."""
    report, checkpoint = _execute_training_job(
        REPO / "bcc_pipeline_tests" / "ddp_multiprocess.yaml",
        sample_root,
        tmp_path,
        command=[DG, "launch", "--job", "training_job"],
        cwd=REPO,
    )
    assert checkpoint["metrics"]["world_size"] == 2
    assert checkpoint["metrics"]["used_feature_cache"]
    assert checkpoint["metrics"]["epochs_run"] == 2
    assert report["n_test"] == 9 and sum(map(sum, report["confusion_matrix"])) == 9

    store = tmp_path / "artifacts" / "mlflow" / "mlflow.db"  # the default store
    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("bcc_pipeline")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["dagster_run_id"] == checkpoint["run_id"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2]
    assert run.data.metrics["test_accuracy"] == pytest.approx(report["accuracy"])
    assert run.data.params["accelerator.world_size"] == "2"


def test_every_shipped_config_is_valid_run_config_for_the_job():
    job = defs.resolve_job_def("training_job")
    for path in sorted((REPO / "configs").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        assert dg.validate_run_config(job, config), path.name


def test_every_asset_declares_a_code_version():
    """So that the UI marks an asset (and what follows it) stale after its logic changes."""
    for node in defs.resolve_asset_graph().asset_nodes:
        assert node.code_version, node.key


def test_every_asset_waits_for_the_launch_check():
    for node in defs.resolve_asset_graph().asset_nodes:
        assert "launch_checks" in node.assets_def.required_resource_keys, node.key


def test_a_config_mistake_from_the_cli_is_one_message_and_writes_nothing(sample_root, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "resources": {"accelerator": {"config": {"accelerator": "cpu"}}},
                "ops": {"vit_checkpoint": {"config": {"backbone": "vit_b16", "weights": "none"}}},
            }
        )
    )
    artifacts = tmp_path / "artifacts"
    command = [DAGSTER, "job", "execute", "-m", "bcc_pipeline.definitions", "-j", "training_job"]
    completed = subprocess.run(
        [*command, "-c", str(config)],
        cwd=tmp_path,
        env=_env(tmp_path, BCC_DATA_DIR=str(sample_root), BCC_ARTIFACTS_DIR=str(artifacts)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1
    assert "- ops.vit_checkpoint.config.backbone: unknown backbone 'vit_b16'" in output
    assert "Traceback" not in output and "Stack Trace" not in output
    assert not [path for path in artifacts.rglob("*") if path.is_file()]


def test_loading_the_code_location_imports_no_deep_learning_stack():
    """The UI, the daemon and every run load the code location; torch and Lightning are
    imported only inside the steps that need them."""
    heavy = ["torch", "torchvision", "pytorch_lightning", "matplotlib", "scipy"]
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, bcc_pipeline.definitions; "
            f"print([name for name in {heavy!r} if name in sys.modules])",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"
