"""vit_checkpoint: fine-tune the backbone on the preprocessed tensors; keep the best epoch."""

import tempfile
from functools import partial
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from bcc_pipeline.assets.common import (
    GROUP,
    artifact_metadata,
    markdown_image,
    markdown_table,
    user_errors,
)
from bcc_pipeline.data.tensors import TensorSplits
from bcc_pipeline.ml.backbones import BackboneConfigError, WeightsUnavailableError
from bcc_pipeline.ml.checkpoint import save_checkpoint
from bcc_pipeline.ml.devices import DeviceConfigError
from bcc_pipeline.ml.plots import training_curves_plot
from bcc_pipeline.ml.training import TrainingSettings, fit_classifier
from bcc_pipeline.resources import AcceleratorResource, ArtifactsResource
from bcc_pipeline.storage import write_text

CHECKPOINT_FILE = "model.pt"


class TrainingConfig(dg.Config):
    backbone: str = Field(
        default="vit_b_16",
        description="A torchvision classification model name, or vit_tiny (small, random init).",
    )
    weights: str = Field(
        default="DEFAULT",
        description=(
            "DEFAULT or a torchvision weights name (downloaded into the torch cache), none "
            "(random init), or a path to a local state-dict file (air-gapped sites)."
        ),
    )
    trainable_blocks: int = Field(
        default=0,
        description="0 trains the head only; k also the last k encoder blocks; -1 everything.",
    )
    max_epochs: int = Field(default=10, description="Upper bound on epochs.")
    early_stopping_patience: int = Field(
        default=3, description="Stop after this many epochs without a lower val_loss."
    )
    batch_size: int = Field(default=16, description="Training batch size per device.")
    learning_rate: float = Field(default=1e-4, description="Adam learning rate.")
    seed: int = Field(default=42, description="Seeds init, shuffling and augmentation.")
    horizontal_flip: bool = Field(
        default=True, description="Random left-right flip of training images (never val/test)."
    )
    num_workers: int = Field(default=0, description="DataLoader worker processes.")
    feature_cache: Literal["auto", "off"] = Field(
        default="auto",
        description=(
            "auto: when a frozen prefix exists, compute it once per image and view (image and "
            "mirror) in reduced precision and train the rest on the cache. off: full forward "
            "pass every epoch."
        ),
    )

    def settings(self) -> TrainingSettings:
        return TrainingSettings(**self.model_dump())


@dg.asset(
    group_name=GROUP,
    kinds={"pytorch"},
    description=(
        "The fine-tuned classifier at its best val_loss epoch: weights, class names, "
        "preprocessing, config and library versions in one plain-data file "
        "(torch.load(..., weights_only=True) opens it)."
    ),
)
def vit_checkpoint(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    accelerator: AcceleratorResource,
    artifacts: ArtifactsResource,
    preprocessed_tensors: str,
) -> dg.Output[str]:
    tensors = TensorSplits.open(preprocessed_tensors)
    settings = config.settings()
    with user_errors(BackboneConfigError, DeviceConfigError, WeightsUnavailableError, ValueError):
        device = accelerator.trainer_device()
        settings.check(tensors.image_size)
    context.log.info(
        f"training {settings.backbone} (trainable_blocks {settings.trainable_blocks}) on "
        f"{device.accelerator} x{device.world_size}, strategy {device.strategy}"
    )
    folder = artifacts.run_dir("vit_checkpoint", context.run.run_id)
    # A spawned DDP worker cannot carry Dagster's logger; its stdout is in the run's logs.
    log = context.log.info if device.world_size == 1 else partial(print, flush=True)
    with (
        tempfile.TemporaryDirectory(dir=folder, prefix=".work-") as work_dir,
        user_errors(WeightsUnavailableError),
    ):
        result = fit_classifier(tensors, settings, device, Path(work_dir), log=log)
    write_text(folder / "history.csv", result.history.to_csv(index=False))
    curves = training_curves_plot(result.history, folder / "training_curves.png", result.best_epoch)
    summary = {
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "best_val_acc": result.best_val_acc,
        "train_seconds": round(result.train_seconds, 2),
        "feature_cache_seconds": round(result.feature_seconds, 2),
        "images_per_second": round(result.images_per_second, 1),
        "used_feature_cache": result.used_feature_cache,
        "world_size": result.world_size,
    }
    path = save_checkpoint(
        folder / CHECKPOINT_FILE,
        result.module,
        {
            "split_fingerprint": tensors.fingerprint,
            # What the model has seen, so that a later gate never credits it with these images.
            "seen_sha256": {split: tensors.digests(split) for split in ("train", "val")},
            "training": result.settings,
            "metrics": summary,
            "run_id": context.run.run_id,
        },
    )
    context.log.info(
        f"best epoch {result.best_epoch}/{result.epochs_run}: val_loss "
        f"{result.best_val_loss:.4f}, val_acc {result.best_val_acc:.3f}"
    )
    return dg.Output(
        str(path),
        metadata={
            **artifact_metadata(path),
            **summary,
            "device": f"{device.accelerator} x{device.world_size} ({device.precision})",
            "history": markdown_table(result.history.round(4)),
            "training_curves": dg.MetadataValue.md(markdown_image(curves, "training curves")),
            "split_fingerprint": tensors.fingerprint,
        },
    )
