"""training_job: every asset of the pipeline, from the manifest to the report and beyond."""

import dagster as dg

training_job = dg.define_asset_job(
    name="training_job",
    selection=dg.AssetSelection.all(),
    description=(
        "Scan, split, preprocess, train, evaluate and promote: the whole pipeline in one run. "
        "Steps run in one process by default (they form a chain, and each would otherwise "
        "import torch again); execution: {config: {multiprocess: {}}} runs each in its own."
    ),
    config={
        "execution": {"config": {"in_process": {}}},
        "loggers": {"console": {"config": {"log_level": "INFO"}}},
    },
)
