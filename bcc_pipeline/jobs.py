"""training_job: every asset of the pipeline, from the manifest to the report and beyond."""

import dagster as dg

training_job = dg.define_asset_job(
    name="training_job",
    selection=dg.AssetSelection.all(),
    description="Scan, split, preprocess, train and evaluate: the whole pipeline in one run.",
)
