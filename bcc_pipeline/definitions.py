"""Assembles the code location; everything it names is defined elsewhere."""

import dagster as dg

from bcc_pipeline.assets import manifest, report, split, tensors, training
from bcc_pipeline.jobs import training_job
from bcc_pipeline.resources import AcceleratorResource, ArtifactsResource, DatasetResource

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([manifest, split, tensors, training, report]),
    jobs=[training_job],
    resources={
        "dataset": DatasetResource(),
        "artifacts": ArtifactsResource(),
        "accelerator": AcceleratorResource(),
    },
)
