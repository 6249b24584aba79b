"""new_data_sensor: retrain when the data folder has changed and settled; off until a user turns
it on."""

import json
from pathlib import Path

import dagster as dg

from bcc_pipeline.data.manifest import folder_fingerprint
from bcc_pipeline.errors import ConfigError
from bcc_pipeline.jobs import training_job
from bcc_pipeline.resources import DatasetResource
from bcc_pipeline.run_config import configured_data_dir
from bcc_pipeline.schedules import retraining_run_config


@dg.sensor(
    name="new_data_sensor",
    job=training_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Fingerprints the data folder (file names, sizes, mtimes; no reads) and requests a "
        "training_job run once it differs from the last one trained on and has stopped "
        "changing: unchanged between two ticks, so a copy still under way is not trained on."
    ),
)
def new_data_sensor(
    context: dg.SensorEvaluationContext, dataset: DatasetResource
) -> dg.SensorResult | dg.SkipReason:
    try:
        run_config = retraining_run_config()
        job = context.repository_def.get_job(training_job.name)
        folder = watched_folder(job, dataset, run_config)
    except ConfigError as err:
        return dg.SkipReason(str(err))
    if not folder.is_dir():
        return dg.SkipReason(f"data folder {folder} does not exist")
    fingerprint = folder_fingerprint(folder)
    if context.cursor is None:
        return dg.SensorResult(
            skip_reason=f"recorded the first fingerprint {fingerprint}; watching for changes",
            cursor=_cursor(trained=fingerprint, seen=fingerprint),
        )
    trained, seen = _read_cursor(context.cursor)
    if fingerprint == trained:
        return dg.SensorResult(
            skip_reason=f"no change in {folder} (fingerprint {fingerprint})",
            cursor=_cursor(trained=trained, seen=fingerprint),
        )
    if fingerprint != seen:
        return dg.SensorResult(
            skip_reason=(
                f"{folder} changed (fingerprint {fingerprint}); waiting one more tick "
                "for it to stop changing (a copy may be under way)"
            ),
            cursor=_cursor(trained=trained, seen=fingerprint),
        )
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=fingerprint, run_config=run_config)],
        cursor=_cursor(trained=fingerprint, seen=fingerprint),
    )


def watched_folder(job: dg.JobDefinition, dataset: DatasetResource, run_config: dict) -> Path:
    """The folder the requested runs of `job` will scan: the data_dir of their run config (env
    vars resolved as the run will) where it names one, else the sensor's dataset resource's."""
    data_dir = configured_data_dir(job, run_config, "the run config of BCC_RUN_CONFIG")
    return DatasetResource(data_dir=data_dir).path if data_dir else dataset.path


def _cursor(trained: str, seen: str) -> str:
    """The fingerprint last trained on (or first recorded) and the one the last tick saw."""
    return json.dumps({"trained": trained, "seen": seen})


def _read_cursor(cursor: str) -> tuple[str, str]:
    """(trained, seen); a cursor from before the settling tick is one fingerprint, both."""
    try:
        values = json.loads(cursor)
        return values["trained"], values["seen"]
    except (ValueError, TypeError, KeyError):
        return cursor, cursor
