"""One materialization of the whole pipeline, shared by the asset tests that read its output."""

from pathlib import Path
from typing import NamedTuple

import dagster as dg
import pytest

from bcc_pipeline.definitions import defs
from bcc_pipeline.resources import AcceleratorResource, ArtifactsResource, DatasetResource

ASSETS = [
    "raw_image_manifest",
    "stratified_split",
    "preprocessed_tensors",
    "vit_checkpoint",
    "test_metrics_report",
]


class PipelineRun(NamedTuple):
    result: dg.ExecuteInProcessResult
    artifacts_root: Path
    instance: dg.DagsterInstance


def resources(data_dir: Path, artifacts_root: Path) -> dict:
    return {
        "dataset": DatasetResource(data_dir=str(data_dir)),
        "artifacts": ArtifactsResource(root=str(artifacts_root)),
        "accelerator": AcceleratorResource(accelerator="cpu"),
    }


def tiny_run_config(**training) -> dg.RunConfig:
    return dg.RunConfig(
        ops={
            "stratified_split": {"config": {"seed": 3}},
            "preprocessed_tensors": {"config": {"image_size": 32}},
            "vit_checkpoint": {
                "config": {
                    "backbone": "vit_tiny",
                    "weights": "none",
                    "trainable_blocks": -1,
                    "max_epochs": 2,
                    "batch_size": 16,
                    "learning_rate": 1e-3,
                    **training,
                }
            },
        }
    )


def pipeline_assets() -> list:
    return [defs.get_assets_def(name) for name in ASSETS]


@pytest.fixture(scope="session")
def pipeline_run(sample_root, tmp_path_factory) -> PipelineRun:
    artifacts_root = tmp_path_factory.mktemp("artifacts")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        pipeline_assets(),
        resources=resources(sample_root, artifacts_root),
        run_config=tiny_run_config(),
        instance=instance,
    )
    assert result.success
    return PipelineRun(result, artifacts_root, instance)


def materialization(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    events = result.asset_materializations_for_node(asset)
    assert len(events) == 1
    return {key: value.value for key, value in events[0].metadata.items()}
