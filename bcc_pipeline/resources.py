"""Swappable resources: where the images are, where artifacts go, and which device trains."""

import os
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from bcc_pipeline.data.images import DEFAULT_MAX_FILE_BYTES
from bcc_pipeline.ml.devices import TrainerDevice
from bcc_pipeline.storage import check_writable_dir


class DatasetResource(dg.ConfigurableResource):
    """The MRI image folder: the Kaggle download (nested root and all) or any class-folder tree."""

    data_dir: str = Field(
        default=os.environ.get("BCC_DATA_DIR", "data/brain_cancer"),
        description=(
            "Folder holding one sub-folder of images per class, at any depth "
            "(e.g. the unzipped Kaggle 'Brain Cancer - MRI dataset'). Env BCC_DATA_DIR when set."
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
        return Path(self.data_dir).expanduser()


class ArtifactsResource(dg.ConfigurableResource):
    """Root of everything the pipeline writes; each run writes under its own run id."""

    root: str = Field(
        default=os.environ.get("BCC_ARTIFACTS_DIR", "artifacts"),
        description="Where manifests, tensors, checkpoints and reports go. Env BCC_ARTIFACTS_DIR.",
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
        return Path(self.root).expanduser().resolve()

    def run_dir(self, asset_name: str, run_id: str) -> Path:
        """`root/<asset>/<run_id>/`, created; two runs never share one. A root that cannot be
        created or written is an UnwritableDirError naming the cause."""
        path = self.path / asset_name / run_id
        check_writable_dir(path)
        return path


class AcceleratorResource(dg.ConfigurableResource):
    """Device settings handed to the Lightning Trainer; the device is config, never code."""

    accelerator: Literal["auto", "cpu", "gpu", "mps"] = Field(
        default="auto",
        description="auto, cpu, gpu (CUDA) or mps. auto picks a GPU, then MPS, then the CPU.",
    )
    devices: str = Field(
        default="auto",
        description="How many devices ('auto', '1', '2', ...) or a comma list of GPU ids ('0,2').",
    )
    precision: str = Field(
        default="32-true",
        description="Lightning precision for the trainable part: 32-true, bf16-mixed, 16-mixed.",
    )
    strategy: str = Field(
        default="auto",
        description=(
            "auto, or ddp for several devices. ddp runs as Lightning's spawn launcher so that it "
            "works inside a Dagster run."
        ),
    )
    num_nodes: int = Field(default=1, description="Machines taking part (multi-node DDP).")

    def trainer_device(self) -> TrainerDevice:
        """Checked settings; a device that is not there is an error naming what is."""
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
        default=20, description="Fewest usable images a class may have."
    )
    max_rejected_fraction: float = Field(
        default=0.05, description="Largest share of files the manifest may reject (warns)."
    )
    split_tolerance: float = Field(
        default=0.05,
        description="Largest gap between a class's split share and the configured fraction.",
    )
    accuracy_floor: float = Field(
        default=0.8,
        description="Lowest test accuracy a retrained model may have and still be promoted.",
    )
