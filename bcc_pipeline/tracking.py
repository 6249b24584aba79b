"""Experiment tracking and the model registry in MLflow, without Dagster.

One MLflow run per pipeline run: it carries the pipeline run's id as a tag and is found again
by it, so every step of that run logs into the same MLflow run, also from another process. A
promoted model becomes a version of one registered model, and the `production` alias moves to
it, so `models:/bcc_pipeline@production` is always the model in use."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Experiment, Metric, Param, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from sqlalchemy.exc import SQLAlchemyError

from bcc_pipeline.errors import ConfigError
from bcc_pipeline.quiet import MLFLOW_MIGRATIONS, quieter

REGISTERED_MODEL = "bcc_pipeline"
PRODUCTION_ALIAS = "production"
PREVIOUS_ALIAS = "previous_production"
"""The version `production` pointed at before the last promotion: one alias away from a rollback."""
PIPELINE_RUN_TAG = "dagster_run_id"
EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")
REPORT_METRICS = {
    "accuracy": "test_accuracy",
    "macro_f1": "test_macro_f1",
    "loss": "test_loss",
    "ece": "ece",
    "macro_auroc": "macro_auroc",
}
"""report.json key -> MLflow metric name; keys a report lacks are left out."""
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""Tells the MLflow 3 UI that the experiment trains models; it otherwise opens on GenAI pages."""
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_PATH_TAG = "checkpoint_path"
"""Every training run's tag: where its checkpoint lies under the artifacts root."""
LOCAL_UI = "http://127.0.0.1:5000"
"""Where `mlflow ui` serves a local store by default."""


class TrackingError(ConfigError):
    """The tracking store cannot be reached or used; the message names the URI."""


SERVER_ANSWER_SECONDS = 10
"""How long a tracking server has to answer the first request of a run."""


def _check_not_in_memory(tracking_uri: str) -> None:
    """A SQLite URI without a file opens a database in memory: every run and model version
    logged there would be gone when the process ends, while the metadata links to them."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite" and parsed.path in ("", "/"):
        raise TrackingError(
            f"tracking_uri {tracking_uri!r} is an in-memory SQLite store, lost when the run "
            "ends; name a file (sqlite:////absolute/path/mlflow.db) or a server",
            setting="tracking_uri",
        )


def _check_not_deleted(experiment: Experiment | None, name: str) -> None:
    """MLflow still finds a deleted experiment by name, but refuses runs in it: after training."""
    if experiment is not None and experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment {name!r} is deleted; restore it (`mlflow experiments restore "
            f"--experiment-id {experiment.experiment_id}`), or set experiment_name to another",
            setting="experiment_name",
        )


def _check_server_answers(tracking_uri: str) -> None:
    """A tracking server that does not answer fails the run in seconds: MLflow's client tries
    again with growing pauses for about four minutes first (measured against a closed port).
    Any HTTP answer will do, whatever its status; only silence or a refused connection fails."""
    if urlparse(tracking_uri).scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(
            f"{tracking_uri.rstrip('/')}/health", timeout=SERVER_ANSWER_SECONDS
        ):
            return
    except urllib.error.HTTPError:
        return  # it answered
    except OSError as err:  # URLError (refused, unknown host, TLS) or a timeout
        reason = getattr(err, "reason", None) or err
        raise TrackingError(
            f"the MLflow server {tracking_uri!r} does not answer ({reason}); start it, fix "
            "tracking_uri, or set enabled: false",
            setting="tracking_uri",
        ) from None


def production_model_uri() -> str:
    return f"models:/{REGISTERED_MODEL}@{PRODUCTION_ALIAS}"


def report_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The REPORT_METRICS a report has (a metric that could not be computed is None there)."""
    return {
        name: float(report[key])
        for key, name in REPORT_METRICS.items()
        if report.get(key) is not None
    }


def flat_params(groups: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """`{"training": {"seed": 42}}` -> `{"training.seed": "42"}`: MLflow params are flat strings."""
    return {
        f"{group}.{key}": str(value)
        for group, values in groups.items()
        for key, value in values.items()
    }


def _artifact_location(tracking_uri: str) -> str | None:
    """A SQLite store keeps its files in `artifacts/` beside the database file (MLflow's own
    default is relative to the working directory); a server decides for itself."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    return (database.parent / "artifacts").resolve().as_uri()


@dataclass(frozen=True)
class TrackingStore:
    """An MLflow tracking store (and its model registry) and the experiment of this pipeline."""

    client: MlflowClient
    tracking_uri: str
    experiment_id: str

    @classmethod
    def open(cls, tracking_uri: str, experiment_name: str) -> TrackingStore:
        """Connect and find the experiment, creating it on first use."""
        _check_server_answers(tracking_uri)
        _check_not_in_memory(tracking_uri)
        with quieter(MLFLOW_MIGRATIONS):  # a new store's table set-up is not news
            try:
                client = MlflowClient(tracking_uri=tracking_uri)  # makes a SQLite file's folder
                experiment = client.get_experiment_by_name(experiment_name)
                _check_not_deleted(experiment, experiment_name)
                experiment_id = (
                    experiment.experiment_id
                    if experiment is not None
                    else client.create_experiment(
                        experiment_name,
                        artifact_location=_artifact_location(tracking_uri),
                        tags={EXPERIMENT_KIND_TAG: "custom_model_development"},
                    )
                )
            except (MlflowException, OSError, SQLAlchemyError) as err:
                raise TrackingError(
                    f"cannot use the MLflow tracking store {tracking_uri!r} ({err}); set "
                    "tracking_uri to a reachable server or a writable sqlite:/// path, or enabled: "
                    "false",
                    setting="tracking_uri",
                ) from None  # the message says it all; the console log shows the innermost error
        return cls(client, tracking_uri, experiment_id)

    def run_for(self, pipeline_run_id: str) -> TrackedRun:
        """The MLflow run tagged with this pipeline run id, created by the first step that asks."""
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{PIPELINE_RUN_TAG} = '{pipeline_run_id}'",
            max_results=1,
        )
        if found:
            return TrackedRun(self, found[0].info.run_id, pipeline_run_id)
        run = self.client.create_run(
            self.experiment_id,
            tags={PIPELINE_RUN_TAG: pipeline_run_id},
            run_name=f"dagster-{pipeline_run_id[:8]}",
        )
        return TrackedRun(self, run.info.run_id, pipeline_run_id)

    def ui_base(self) -> str | None:
        """The web UI of this store: the server itself, or `mlflow ui` on this machine for a
        local store; None where there is no such page (e.g. databricks://)."""
        scheme = urlparse(self.tracking_uri).scheme
        if scheme in ("http", "https"):
            return self.tracking_uri.rstrip("/")
        if scheme in ("", "file", "sqlite"):
            return LOCAL_UI
        return None


@dataclass(frozen=True)
class TrackedRun:
    store: TrackingStore
    run_id: str
    pipeline_run_id: str

    @property
    def url(self) -> str | None:
        base = self.store.ui_base()
        if base is None:
            return None
        return f"{base}/#/experiments/{self.store.experiment_id}/runs/{self.run_id}"

    def log_training(
        self,
        params: Mapping[str, str],
        history: pd.DataFrame,
        summary: Mapping[str, float],
        checkpoint: Path,
        files: Iterable[Path],
        log_checkpoint: bool = False,
    ) -> None:
        """Params, one point per epoch (step = epoch number) of each of EPOCH_METRICS, the
        summary numbers, the checkpoint's path (tag CHECKPOINT_PATH_TAG) and the other files
        (`training/`). The checkpoint file itself (under `checkpoint/`) with `log_checkpoint`
        only: otherwise the store gets it when the model is promoted (see
        register_production_model), since a copy per run would grow the store by the model's
        size every run, beyond the reach of the artifacts' keep_runs."""
        now = _now_ms()
        metrics = [
            Metric(name, float(row[name]), now, int(row["epoch"]))
            for row in history.to_dict("records")
            for name in EPOCH_METRICS
            if name in row
        ]
        metrics += [Metric(name, float(value), now, 0) for name, value in summary.items()]
        params_list = [Param(key, value) for key, value in params.items()]
        tags = [RunTag(CHECKPOINT_PATH_TAG, str(checkpoint))]
        self.store.client.log_batch(self.run_id, metrics=metrics, params=params_list, tags=tags)
        if log_checkpoint:
            self.store.client.log_artifact(self.run_id, str(checkpoint), CHECKPOINT_DIR)
        for path in files:
            self.store.client.log_artifact(self.run_id, str(path), "training")
        self._finish()

    def log_evaluation(self, report: Mapping[str, Any], folder: Path) -> None:
        """The test metrics of REPORT_METRICS that the report has, and the report folder as it
        is (report.json, report.md, plots, model card) under `report/`."""
        now = _now_ms()
        metrics = [Metric(name, value, now, 0) for name, value in report_metrics(report).items()]
        self.store.client.log_batch(self.run_id, metrics=metrics)
        self.store.client.log_artifacts(self.run_id, str(folder), "report")
        self._finish()

    def register_production_model(
        self, checkpoint: Path, report: Mapping[str, Any], reason: str
    ) -> ModelVersion:
        """A new version of REGISTERED_MODEL from this run's checkpoint (logged now if this
        run did not train it), tagged with the pipeline run id, the test metrics and the
        reason, with the `production` alias moved to it and the version it replaces aliased
        PREVIOUS_ALIAS."""
        client = self.store.client
        tags = {
            PIPELINE_RUN_TAG: self.pipeline_run_id,
            "promotion_reason": reason,
            **{name: str(value) for name, value in report_metrics(report).items()},
        }
        if not client.list_artifacts(self.run_id, CHECKPOINT_DIR):
            client.log_artifact(self.run_id, str(checkpoint), CHECKPOINT_DIR)
        try:
            model = client.get_registered_model(REGISTERED_MODEL)
        except MlflowException as err:
            if err.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise
            model = client.create_registered_model(
                REGISTERED_MODEL,
                description="Brain-MRI tumour classifier (bcc_pipeline); the alias "
                f"`{PRODUCTION_ALIAS}` is the model in use.",
            )
        replaced = model.aliases.get(PRODUCTION_ALIAS)
        version = client.create_model_version(
            REGISTERED_MODEL,
            f"runs:/{self.run_id}/{CHECKPOINT_DIR}",
            run_id=self.run_id,
            tags=tags,
            description=reason,
        )
        client.set_registered_model_alias(REGISTERED_MODEL, PRODUCTION_ALIAS, version.version)
        if replaced is not None:
            client.set_registered_model_alias(REGISTERED_MODEL, PREVIOUS_ALIAS, str(replaced))
        self._finish()
        return version

    def _finish(self) -> None:
        """Mark the run finished after each step that logs; a later step of the same pipeline
        run logs into it again and moves its end time."""
        self.store.client.set_terminated(self.run_id, "FINISHED")


def _now_ms() -> int:
    return int(time.time() * 1000)
