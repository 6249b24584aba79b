"""Swappable resources: where the images are, where artifacts go, which device trains, the
quality thresholds, experiment tracking, and the check of a run's whole config when it starts.

Environment defaults (BCC_DATA_DIR, BCC_ARTIFACTS_DIR, MLFLOW_TRACKING_URI) are read when a run
uses the resource, never at import: dg.EnvVar has no fallback value, and these settings need one."""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field, PrivateAttr

from bcc_pipeline.data.images import DEFAULT_MAX_FILE_BYTES
from bcc_pipeline.errors import ConfigError
from bcc_pipeline.ml.settings import DeviceSettings
from bcc_pipeline.storage import UnwritableDirError, check_writable_dir

if TYPE_CHECKING:
    import pandas as pd

    from bcc_pipeline.data.tensors import TensorSplits
    from bcc_pipeline.ml.devices import TrainerDevice
    from bcc_pipeline.ml.settings import TrainingSettings
    from bcc_pipeline.tracking import TrackedRun, TrackingStore

DEFAULT_DATA_DIR = "data/brain_cancer"
DEFAULT_ARTIFACTS_DIR = "artifacts"
PROTECTED_ASSETS = frozenset({"production_model"})
"""Assets whose run folders retention never deletes."""
DEFAULT_TRACKING_DB = "mlflow/mlflow.db"


class DatasetResource(dg.ConfigurableResource):
    """The MRI image folder: the Kaggle download (nested root and all) or any class-folder tree."""

    data_dir: str | None = Field(
        default=None,
        description=(
            "Folder holding one sub-folder of images per class, at any depth (e.g. the unzipped "
            f"Kaggle 'Brain Cancer - MRI dataset'). Unset: $BCC_DATA_DIR, else {DEFAULT_DATA_DIR}."
        ),
    )
    max_file_bytes: int = Field(
        default=DEFAULT_MAX_FILE_BYTES,
        description=(
            "Files larger than this are rejected (status too_large) without being read: a "
            "512x512 JPEG slice is about 50 KB. Default 64 MiB."
        ),
    )
    class_folders: list[str] = Field(
        default=[],
        description=(
            "The class folders, as paths relative to data_dir or their last parts "
            "(['brain_glioma', 'brain_menin', 'brain_tumor']). Empty: the image-holding "
            "sub-folders of the folder whose sub-folders hold the most images; images "
            "elsewhere get status outside_class_folders."
        ),
    )

    @property
    def path(self) -> Path:
        chosen = self.data_dir or os.environ.get("BCC_DATA_DIR") or DEFAULT_DATA_DIR
        return Path(chosen).expanduser()

    def problems(self) -> list[ConfigError]:
        return _below("max_file_bytes", self.max_file_bytes, 1)


class ArtifactsResource(dg.ConfigurableResource):
    """Root of everything the pipeline writes; each run writes under its own run id."""

    root: str | None = Field(
        default=None,
        description=(
            "Where manifests, tensors, checkpoints and reports go. "
            f"Unset: $BCC_ARTIFACTS_DIR, else ./{DEFAULT_ARTIFACTS_DIR}."
        ),
    )
    keep_runs: int = Field(
        default=20,
        description=(
            "Run folders kept per asset (and frozen-feature stores kept): older ones are "
            "deleted when a new one is made. 0 keeps everything. The production model's "
            "files are never deleted."
        ),
    )
    stale_temp_hours: float = Field(
        default=24.0,
        description=(
            "raw_image_manifest removes temp files (.<name>.*.tmp) and .work-* folders of killed "
            "runs under root that have not changed for this many hours, unless a live writer "
            "holds them or their run is still in progress."
        ),
    )

    @property
    def path(self) -> Path:
        chosen = self.root or os.environ.get("BCC_ARTIFACTS_DIR") or DEFAULT_ARTIFACTS_DIR
        return Path(chosen).expanduser().resolve()

    def problems(self) -> list[ConfigError]:
        found = _below("keep_runs", self.keep_runs, 0)
        found += _below("stale_temp_hours", self.stale_temp_hours, 0)
        try:
            check_writable_dir(self.path)
        except UnwritableDirError as err:
            found.append(ConfigError(f"{err}; choose a folder you can write", setting="root"))
        return found

    def run_dir(self, asset_name: str, run_id: str) -> Path:
        """`root/<asset>/<run_id>/`, created; two runs never share one. A root that cannot be
        created or written is an UnwritableDirError naming the cause. Older run folders of
        the asset beyond keep_runs are deleted (never the production model's)."""
        from bcc_pipeline.retention import prune_old_entries

        path = self.path / asset_name / run_id
        check_writable_dir(path)
        if asset_name not in PROTECTED_ASSETS:
            prune_old_entries(path.parent, self.keep_runs, spare=run_id)
        return path

    def store_dir(self, kind: str) -> Path:
        """`root/cache/<kind>/`: content-keyed stores that runs share (one sub-folder per
        key), pruned to the keep_runs most recently used."""
        from bcc_pipeline.retention import prune_old_entries

        path = self.path / "cache" / kind
        check_writable_dir(path)
        prune_old_entries(path, self.keep_runs, runs_only=False)
        return path


class AcceleratorResource(dg.ConfigurableResource, DeviceSettings):
    """Device settings handed to the Lightning Trainer (bcc_pipeline.ml.settings); the device is
    config, never code."""

    def trainer_device(self) -> "TrainerDevice":
        """Checked settings; a device that is not there is an error naming what is."""
        from bcc_pipeline.ml.devices import TrainerDevice

        return TrainerDevice.resolve(self)


class QualityGatesResource(dg.ConfigurableResource):
    """Thresholds the asset checks and the promotion gate apply."""

    min_images_per_class: int = Field(
        default=20, description="Fewest usable images a class may have."
    )
    max_rejected_fraction: float = Field(
        default=0.05,
        description="Largest share of data files (not operating-system files) the manifest may "
        "reject (warns).",
    )
    split_tolerance: float = Field(
        default=0.05,
        description="Largest gap between a class's split share and the configured fraction.",
    )
    accuracy_floor: float = Field(
        default=0.8,
        description="Lowest test accuracy a retrained model may have and still be promoted.",
    )
    non_inferiority_margin: float = Field(
        default=0.01,
        description=(
            "How much less accurate than the production model, on the same test images that "
            "model never trained on, a retrained model may be and still replace it (0.01 = one "
            "percentage point): the newer model has seen more data, so a tie goes to it."
        ),
    )
    min_images_compared: int = Field(
        default=30,
        description=(
            "Fewest test images, untouched by the production model, that both models must be "
            "scored on before a retrained model replaces it: on fewer, 'no worse' says nothing "
            "(after a changed split or a smaller folder there may be a handful, or none)."
        ),
    )
    significance_level: float = Field(
        default=0.05,
        description=(
            "A retrained model within the margin is still refused when the exact McNemar test "
            "on the images where only one of the two models is right finds it worse at this "
            "level."
        ),
    )

    def problems(self) -> list[ConfigError]:
        found = _below("min_images_per_class", self.min_images_per_class, 1)
        found += _below("min_images_compared", self.min_images_compared, 1)
        for name in (
            "max_rejected_fraction",
            "split_tolerance",
            "accuracy_floor",
            "non_inferiority_margin",
            "significance_level",
        ):
            found += _outside(name, getattr(self, name), 0, 1)
        return found


def _below(setting: str, value: float, least: float) -> list[ConfigError]:
    if value >= least:
        return []
    return [ConfigError(f"{setting} must be at least {least}; got {value}", setting=setting)]


def _outside(setting: str, value: float, low: float, high: float) -> list[ConfigError]:
    """Fractions and probabilities: a value like 80 for 80% is the usual slip."""
    if low <= value <= high:
        return []
    return [
        ConfigError(f"{setting} is a fraction from {low} to {high}; got {value}", setting=setting)
    ]


class TrackingResource(dg.ConfigurableResource):
    """MLflow experiment tracking and model registry: each training run is one MLflow run
    (params, per-epoch and test metrics, report files, its checkpoint's path), tagged with the
    Dagster run id, and each promoted model a version of the registered model `bcc_pipeline`
    with the alias `production`, its checkpoint logged with it. Every method returns the
    metadata that links the asset to MLflow (none when tracking is off)."""

    artifacts: ArtifactsResource
    enabled: bool = Field(
        default=True,
        description="Log runs to MLflow and register promoted models; false turns both off.",
    )
    tracking_uri: str | None = Field(
        default=None,
        description=(
            "MLflow tracking URI: a server (http://host:5000), sqlite:///path/to/mlflow.db, ... "
            "Unset: $MLFLOW_TRACKING_URI, else a local SQLite store (no server) at "
            f"<artifacts root>/{DEFAULT_TRACKING_DB}, with its files in an artifacts/ folder "
            "beside it."
        ),
    )
    experiment_name: str = Field(
        default="bcc_pipeline", description="MLflow experiment that holds the runs."
    )
    log_every_checkpoint: bool = Field(
        default=False,
        description=(
            "Also copy every training run's checkpoint into MLflow (vit_b_16: about 330 MB a "
            "run, which artifacts.keep_runs never deletes). Off: only promoted models' go in "
            "(the registry's versions need them); each run is tagged checkpoint_path with its "
            "file under the artifacts root."
        ),
    )
    _store: "TrackingStore | None" = PrivateAttr(default=None)

    @property
    def uri(self) -> str:
        chosen = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        return chosen or f"sqlite:///{self.artifacts.path / DEFAULT_TRACKING_DB}"

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Connect when the run starts, so that a tracking store that cannot be used stops the
        run before training rather than after it."""
        run = context.dagster_run
        if self.enabled and run is not None and not run.is_finished:
            self._run_store()

    def log_training(
        self,
        run: dg.DagsterRun,
        settings: "TrainingSettings",
        device: "TrainerDevice",
        tensors: "TensorSplits",
        history: "pd.DataFrame",
        summary: dict[str, float],
        checkpoint: Path,
        files: Sequence[Path],
    ) -> dict[str, dg.MetadataValue]:
        """Params (training config, device, split, data), per-epoch metrics, summary, files."""
        if not self.enabled:
            return {}
        from dataclasses import asdict

        from bcc_pipeline.tracking import flat_params

        counts = {f"n_{name}": split["count"] for name, split in tensors.meta["splits"].items()}
        groups = {
            "training": settings.model_dump(),
            "accelerator": {**asdict(device), "world_size": device.world_size},
            "data": {
                "image_size": tensors.image_size,
                "split_fingerprint": tensors.fingerprint,
                "class_names": tensors.class_names,
                **counts,
            },
        }
        split = _split_settings(run)
        if split is not None:
            groups["split"] = split
        tracked = self._run_store().run_for(run.run_id)
        tracked.log_training(
            flat_params(groups), history, summary, checkpoint, files, self.log_every_checkpoint
        )
        return _links(tracked)

    def log_evaluation(
        self, run: dg.DagsterRun, report: dict, folder: Path
    ) -> dict[str, dg.MetadataValue]:
        """Test metrics, and every file of the report folder."""
        if not self.enabled:
            return {}
        tracked = self._run_store().run_for(run.run_id)
        tracked.log_evaluation(report, folder)
        return _links(tracked)

    def register_promoted_model(
        self, run: dg.DagsterRun, checkpoint: Path, report: dict, reason: str
    ) -> dict[str, dg.MetadataValue]:
        """A new version of the registered model, now `models:/bcc_pipeline@production`."""
        if not self.enabled:
            return {}
        from bcc_pipeline.tracking import production_model_uri

        tracked = self._run_store().run_for(run.run_id)
        version = tracked.register_production_model(checkpoint, report, reason)
        return {
            **_links(tracked),
            "mlflow_model_version": int(version.version),
            "mlflow_model_uri": production_model_uri(),
        }

    def _run_store(self) -> "TrackingStore":
        from bcc_pipeline.tracking import TrackingStore

        if self._store is None:
            self._store = TrackingStore.open(self.uri, self.experiment_name)
        return self._store


def _split_settings(run: dg.DagsterRun) -> dict | None:
    """The split settings of this run's config, when this run made the split; None when the
    split came from an earlier run (its settings are that run's, not this config's)."""
    from bcc_pipeline.config import SplitConfig

    steps, selection = run.step_keys_to_execute, run.asset_selection
    if steps is not None and "stratified_split" not in steps:
        return None
    if selection and dg.AssetKey("stratified_split") not in selection:
        return None
    config = ((run.run_config.get("ops") or {}).get("stratified_split") or {}).get("config")
    return SplitConfig(**(config or {})).model_dump()


def _links(tracked: "TrackedRun") -> dict[str, dg.MetadataValue]:
    """Metadata linking an asset's materialization to its MLflow run."""
    links: dict[str, dg.MetadataValue] = {
        "mlflow_run_id": dg.MetadataValue.text(tracked.run_id),
        "mlflow_tracking_uri": dg.MetadataValue.text(tracked.store.tracking_uri),
    }
    if tracked.url is not None:
        links["mlflow_run_url"] = dg.MetadataValue.url(tracked.url)
    return links


class LaunchChecksResource(dg.ConfigurableResource):
    """Checks a run's whole config against this machine when the run starts, before any asset
    materializes: every mistake that needs no data fails the run in seconds, all of them in one
    message that names each field. Every asset requires it, so it runs first whichever assets
    a run selects and whichever executor runs them."""

    dataset: DatasetResource
    artifacts: ArtifactsResource
    accelerator: AcceleratorResource
    quality: QualityGatesResource

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        from bcc_pipeline.data.parallel import start_worker_server
        from bcc_pipeline.garbage import import_frozen, skip_final_garbage_collection
        from bcc_pipeline.launch_checks import MANIFEST, TENSORS, raise_for_problems
        from bcc_pipeline.retention import hold_run_lock

        run = context.dagster_run
        if run is None:
            return  # a resource built outside a run checks nothing
        if run.is_finished:
            return  # `dagster job execute` rebuilds a finished run's context to read its outputs
        # This process executes a run: once it exits, it need not tidy up what it imported.
        skip_final_garbage_collection()
        steps = _steps_to_run(context)
        if steps is None or not steps.isdisjoint({MANIFEST, TENSORS}):
            # The scan's and the decoder's worker server starts while the checks import torch.
            start_worker_server("bcc_pipeline.data.manifest", "bcc_pipeline.data.tensors")
        import_frozen("torch", "torchvision")  # what the checks import; the run keeps them
        raise_for_problems(
            run.run_config,
            steps,
            dataset=self.dataset,
            artifacts=self.artifacts,
            accelerator=self.accelerator,
            quality=self.quality,
        )
        # Runs pruning the same artifacts root (from other Dagster instances too) spare this
        # run's folders while this process lives.
        hold_run_lock(self.artifacts.path, run.run_id)


def _steps_to_run(context: dg.InitResourceContext) -> set[str] | None:
    """The step keys (asset names, for assets) this run executes; None when unknown."""
    run = context.dagster_run
    if context.instance is None or run is None or run.execution_plan_snapshot_id is None:
        return None
    plan = context.instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    return set(plan.step_keys_to_execute)
