"""Weekly retraining, off until a user turns it on (UI or `dagster schedule start`)."""

import os

import dagster as dg

from bcc_pipeline.errors import ConfigError
from bcc_pipeline.jobs import training_job
from bcc_pipeline.run_config import read_run_config

DEFAULT_CRON, DEFAULT_TIMEZONE = "0 3 * * 1", "UTC"


def retraining_run_config() -> dict:
    """Run config for scheduled and sensor-triggered runs: BCC_RUN_CONFIG names a YAML file
    (e.g. configs/seed_recipe.yaml); without it the asset defaults and env vars apply. A file
    that cannot be read, or is no mapping, is a ConfigError that says so."""
    path = os.environ.get("BCC_RUN_CONFIG")
    return read_run_config(path, f"BCC_RUN_CONFIG {path!r}") if path else {}


def _retraining_schedule(cron: str, timezone: str, problem: str = "") -> dg.ScheduleDefinition:
    """The schedule; with a `problem`, one whose every tick skips and says it."""

    @dg.schedule(
        name="retraining_schedule",
        job=training_job,
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=(
            "Retrains the classifier every Monday 03:00 UTC by default; BCC_RETRAIN_CRON and "
            "BCC_RETRAIN_TIMEZONE change when, BCC_RUN_CONFIG which config."
            + (f" NOT RUNNING: {problem}" if problem else "")
        ),
    )
    def retraining_schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> dg.RunRequest | dg.SkipReason:
        if problem:
            return dg.SkipReason(problem)
        try:
            return dg.RunRequest(run_config=retraining_run_config())
        except ConfigError as err:
            return dg.SkipReason(str(err))

    return retraining_schedule


def build_retraining_schedule() -> dg.ScheduleDefinition:
    """The schedule at BCC_RETRAIN_CRON in BCC_RETRAIN_TIMEZONE. A typo there must not stop
    the code location from loading (every job, the UI and the CLI with it): the schedule then
    keeps the default times and each tick skips, naming the mistake."""
    cron = os.environ.get("BCC_RETRAIN_CRON", DEFAULT_CRON)
    timezone = os.environ.get("BCC_RETRAIN_TIMEZONE", DEFAULT_TIMEZONE)
    try:
        return _retraining_schedule(cron, timezone)
    except dg.DagsterInvalidDefinitionError as err:
        problem = (
            f"BCC_RETRAIN_CRON={cron!r} with BCC_RETRAIN_TIMEZONE={timezone!r} cannot be "
            f"used: {err} Fix the variable and reload the code location."
        )
        return _retraining_schedule(DEFAULT_CRON, DEFAULT_TIMEZONE, problem)
