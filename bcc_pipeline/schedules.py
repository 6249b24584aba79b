"""Weekly retraining, off until a user turns it on (UI or `dagster schedule start`)."""

import os
from pathlib import Path

import dagster as dg
import yaml

from bcc_pipeline.jobs import training_job


def retraining_run_config() -> dict:
    """Run config for scheduled and sensor-triggered runs: BCC_RUN_CONFIG names a YAML file
    (e.g. configs/seed_recipe.yaml); without it the asset defaults and env vars apply."""
    path = os.environ.get("BCC_RUN_CONFIG")
    return yaml.safe_load(Path(path).read_text()) if path else {}


@dg.schedule(
    name="retraining_schedule",
    job=training_job,
    cron_schedule=os.environ.get("BCC_RETRAIN_CRON", "0 3 * * 1"),
    execution_timezone=os.environ.get("BCC_RETRAIN_TIMEZONE", "UTC"),
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        "Retrains the classifier every Monday 03:00 UTC by default; BCC_RETRAIN_CRON and "
        "BCC_RETRAIN_TIMEZONE change when, BCC_RUN_CONFIG which config."
    ),
)
def retraining_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_config=retraining_run_config())
