"""Swappable resources: where the images are, where artifacts go, which device trains, the
quality thresholds, and the check of a run's whole config when it starts.

Environment defaults (BCC_DATA_DIR, BCC_ARTIFACTS_DIR) are read when a run uses the resource,
never at import: dg.EnvVar has no fallback value, and these settings need one."""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import Field

from bcc_pipeline.data.images import DEFAULT_MAX_FILE_BYTES
from bcc_pipeline.storage import check_writable_dir

if TYPE_CHECKING:
    from bcc_pipeline.ml.devices import TrainerDevice

DEFAULT_DATA_DIR = "data/brain_cancer"
DEFAULT_ARTIFACTS_DIR = "artifacts"
PROTECTED_ASSETS = frozenset({"production_model"})
"""Assets whose run folders retention never deletes."""


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
        gt=0,
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
        ge=0,
        description=(
            "Run folders kept per asset (and frozen-feature stores kept): older ones are "
            "deleted when a new one is made. 0 keeps everything. The production model's "
            "files are never deleted."
        ),
    )
    stale_temp_hours: float = Field(
        default=24.0,
        ge=0,
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


class AcceleratorResource(dg.ConfigurableResource):
    """Device settings handed to the Lightning Trainer; the device is config, never code."""

    accelerator: Literal["auto", "cpu", "gpu", "mps"] = Field(
        default="auto",
        description="auto, cpu, gpu (CUDA) or mps. auto picks a GPU, then MPS, then the CPU.",
    )
    devices: Any = Field(
        default="auto",
        description=(
            "As in Lightning: a count (2), GPU ids ([0, 1] or '0,1'), or 'auto' (all GPUs, "
            "else one device)."
        ),
    )
    precision: str = Field(
        default="32-true",
        description=(
            "Lightning precision of the trainable part: 32-true, bf16-mixed, or 16-mixed (GPU)."
        ),
    )
    strategy: str = Field(
        default="auto",
        description=(
            "auto, or ddp for several devices. ddp runs as Lightning's spawn launcher so that it "
            "works inside a Dagster run."
        ),
    )
    num_nodes: int = Field(default=1, description="Machines taking part (multi-node DDP).")

    def trainer_device(self) -> "TrainerDevice":
        """Checked settings; a device that is not there is an error naming what is."""
        from bcc_pipeline.ml.devices import TrainerDevice

        return TrainerDevice.resolve(
            accelerator=self.accelerator,
            devices=self.devices,
            precision=self.precision,
            strategy=self.strategy,
            num_nodes=self.num_nodes,
        )


class QualityGatesResource(dg.ConfigurableResource):
    """Thresholds the asset checks and the promotion gate apply."""

    min_images_per_class: int = Field(
        default=20, ge=1, description="Fewest usable images a class may have."
    )
    max_rejected_fraction: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Largest share of files the manifest may reject (warns).",
    )
    split_tolerance: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Largest gap between a class's split share and the configured fraction.",
    )
    accuracy_floor: float = Field(
        default=0.8,
        ge=0,
        le=1,
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
    significance_level: float = Field(
        default=0.05,
        description=(
            "A retrained model within the margin is still refused when the exact McNemar test "
            "on the images where only one of the two models is right finds it worse at this "
            "level."
        ),
    )


class LaunchChecksResource(dg.ConfigurableResource):
    """Checks a run's whole config against this machine when the run starts, before any asset
    materializes: every mistake that needs no data fails the run in seconds, all of them in one
    message that names each field. Every asset requires it, so it runs first whichever assets
    a run selects and whichever executor runs them."""

    dataset: DatasetResource
    artifacts: ArtifactsResource
    accelerator: AcceleratorResource

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        from bcc_pipeline.launch_checks import raise_for_problems

        run = context.dagster_run
        if run is None:
            return  # a resource built outside a run checks nothing
        if run.is_finished:
            return  # `dagster job execute` rebuilds a finished run's context to read its outputs
        raise_for_problems(
            run.run_config,
            _steps_to_run(context),
            dataset=self.dataset,
            artifacts=self.artifacts,
            accelerator=self.accelerator,
        )


def _steps_to_run(context: dg.InitResourceContext) -> set[str] | None:
    """The step keys (asset names, for assets) this run executes; None when unknown."""
    run = context.dagster_run
    if context.instance is None or run is None or run.execution_plan_snapshot_id is None:
        return None
    plan = context.instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    return set(plan.step_keys_to_execute)
