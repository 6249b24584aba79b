"""Assembles the code location; everything it names is defined elsewhere."""

import dagster as dg

from bcc_pipeline import checks
from bcc_pipeline.assets import manifest, promotion, report, split, tensors, training
from bcc_pipeline.jobs import training_job
from bcc_pipeline.resources import (
    AcceleratorResource,
    ArtifactsResource,
    DatasetResource,
    QualityGatesResource,
)
from bcc_pipeline.schedules import retraining_schedule
from bcc_pipeline.sensors import new_data_sensor

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([manifest, split, tensors, training, report, promotion]),
    asset_checks=dg.load_asset_checks_from_modules([checks]),
    jobs=[training_job],
    schedules=[retraining_schedule],
    sensors=[new_data_sensor],
    resources={
        "dataset": DatasetResource(),
        "artifacts": ArtifactsResource(),
        "accelerator": AcceleratorResource(),
        "quality": QualityGatesResource(),
    },
)
