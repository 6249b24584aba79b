"""Assembles the code location; everything it names is defined elsewhere."""

import dagster as dg

from bcc_pipeline import checks
from bcc_pipeline.assets import manifest, promotion, report, split, tensors, training
from bcc_pipeline.console_log import concise_console_logger
from bcc_pipeline.io_manager import RunScopedIOManager
from bcc_pipeline.jobs import training_job
from bcc_pipeline.resources import (
    AcceleratorResource,
    ArtifactsResource,
    DatasetResource,
    LaunchChecksResource,
    QualityGatesResource,
    TrackingResource,
)
from bcc_pipeline.schedules import build_retraining_schedule
from bcc_pipeline.sensors import new_data_sensor

# Configured at launch, so the launch check sees exactly the settings the assets will get.
dataset = DatasetResource.configure_at_launch()
artifacts = ArtifactsResource.configure_at_launch()
accelerator = AcceleratorResource.configure_at_launch()
quality = QualityGatesResource.configure_at_launch()

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([manifest, split, tensors, training, report, promotion]),
    asset_checks=dg.load_asset_checks_from_modules([checks]),
    jobs=[training_job],
    # The one setting read when the code location loads: a schedule's times must exist then.
    schedules=[build_retraining_schedule()],
    sensors=[new_data_sensor],
    loggers={"console": concise_console_logger},
    resources={
        "io_manager": RunScopedIOManager(),
        "dataset": dataset,
        "artifacts": artifacts,
        "accelerator": accelerator,
        "quality": quality,
        "tracking": TrackingResource.configure_at_launch(artifacts=artifacts),
        "launch_checks": LaunchChecksResource(
            dataset=dataset, artifacts=artifacts, accelerator=accelerator, quality=quality
        ),
    },
)
