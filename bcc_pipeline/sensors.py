"""new_data_sensor: retrain when the data folder changes; off until a user turns it on."""

import dagster as dg

from bcc_pipeline.data.manifest import folder_fingerprint
from bcc_pipeline.jobs import training_job
from bcc_pipeline.resources import DatasetResource
from bcc_pipeline.schedules import retraining_run_config


@dg.sensor(
    name="new_data_sensor",
    job=training_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Fingerprints the data folder (file names, sizes, mtimes; no reads) and requests a "
        "training_job run when it differs from the last one seen."
    ),
)
def new_data_sensor(
    context: dg.SensorEvaluationContext, dataset: DatasetResource
) -> dg.SensorResult | dg.SkipReason:
    if not dataset.path.is_dir():
        return dg.SkipReason(f"data folder {dataset.path} does not exist")
    fingerprint = folder_fingerprint(dataset.path)
    if fingerprint == context.cursor:
        return dg.SkipReason(f"no change in {dataset.path} (fingerprint {fingerprint})")
    if context.cursor is None:
        return dg.SensorResult(
            skip_reason=f"recorded the first fingerprint {fingerprint}; watching for changes",
            cursor=fingerprint,
        )
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=fingerprint, run_config=retraining_run_config())],
        cursor=fingerprint,
    )
