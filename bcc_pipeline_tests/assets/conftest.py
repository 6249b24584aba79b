"""One materialization of the whole pipeline, shared by the asset tests that read its output."""

from pathlib import Path
from typing import NamedTuple

import dagster as dg
import pytest

from bcc_pipeline.console_log import innermost_message
from bcc_pipeline.definitions import defs
from bcc_pipeline.io_manager import RunScopedIOManager
from bcc_pipeline.resources import (
    AcceleratorResource,
    ArtifactsResource,
    DatasetResource,
    LaunchChecksResource,
    QualityGatesResource,
    TrackingResource,
)

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


def resources(
    data_dir: Path,
    artifacts_root: Path,
    accelerator: str = "cpu",
    accuracy_floor: float = 0.8,
    tracking: bool = False,
    **dataset_options,
) -> dict:
    """Every resource the assets take, as a user would configure them; MLflow tracking (into
    the default store under the artifacts root) only where a test asks for it."""
    dataset = DatasetResource(data_dir=str(data_dir), **dataset_options)
    artifacts = ArtifactsResource(root=str(artifacts_root))
    device = AcceleratorResource(accelerator=accelerator)
    quality = QualityGatesResource(accuracy_floor=accuracy_floor)
    return {
        "io_manager": RunScopedIOManager(),
        "dataset": dataset,
        "artifacts": artifacts,
        "accelerator": device,
        "quality": quality,
        "tracking": TrackingResource(artifacts=artifacts, enabled=tracking),
        "launch_checks": LaunchChecksResource(
            dataset=dataset, artifacts=artifacts, accelerator=device, quality=quality
        ),
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


def launch_failure(result: dg.ExecuteInProcessResult) -> str:
    """The launch check's message of a run that stopped before any asset started."""
    assert not result.success
    assert not result.get_asset_materialization_events(), "an asset ran before the check"
    errors = [
        event.event_specific_data.error
        for event in result.all_events
        if event.event_type_value == "RESOURCE_INIT_FAILURE"
    ]
    assert errors, "the run did not fail at launch"
    return innermost_message(errors[0])
