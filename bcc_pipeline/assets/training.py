"""vit_checkpoint: fine-tune the backbone on the preprocessed tensors; keep the best epoch."""

from functools import partial

import dagster as dg

from bcc_pipeline.assets.common import (
    GROUP,
    artifact_metadata,
    markdown_image,
    markdown_table,
    user_errors,
)
from bcc_pipeline.config import TrainingConfig
from bcc_pipeline.errors import ConfigError
from bcc_pipeline.resources import (
    AcceleratorResource,
    ArtifactsResource,
    LaunchChecksResource,
    TrackingResource,
)

CODE_VERSION = "1"
"""Bump when the training logic changes: the UI then marks vit_checkpoint and what follows stale."""


@dg.asset(
    group_name=GROUP,
    kinds={"pytorch"},
    code_version=CODE_VERSION,
    description=(
        "The fine-tuned classifier at its best val_loss epoch: weights, class names, "
        "preprocessing, config and library versions in one plain-data file "
        "(torch.load(..., weights_only=True) opens it)."
    ),
)
def vit_checkpoint(
    context: dg.AssetExecutionContext,
    launch_checks: LaunchChecksResource,
    config: TrainingConfig,
    accelerator: AcceleratorResource,
    artifacts: ArtifactsResource,
    tracking: TrackingResource,
    preprocessed_tensors: str,
) -> dg.Output[str]:
    from bcc_pipeline import garbage

    garbage.import_frozen("bcc_pipeline.ml.trained_checkpoint")  # Lightning, torchmetrics, scipy
    from bcc_pipeline.data.tensors import TensorSplits
    from bcc_pipeline.ml.trained_checkpoint import train_checkpoint

    tensors = TensorSplits.open(preprocessed_tensors)
    with user_errors(ConfigError):
        device = accelerator.trainer_device()
    context.log.info(
        f"training {config.backbone} (weights {config.weights}, trainable_blocks "
        f"{config.trainable_blocks}) at {tensors.image_size} px on {device.accelerator} "
        f"x{device.world_size}, strategy {device.strategy}"
    )
    folder = artifacts.run_dir("vit_checkpoint", context.run.run_id)
    # A spawned DDP worker cannot carry Dagster's logger; its stdout is in the run's logs.
    log = context.log.info if device.world_size == 1 else partial(print, flush=True)
    with user_errors(ConfigError):
        trained = train_checkpoint(
            tensors,
            config,
            device,
            folder,
            context.run.run_id,
            log,
            feature_stores=artifacts.store_dir("features"),
        )
    fit, path = trained.fit, trained.path
    mlflow_links = tracking.log_training(
        context.run,
        config,
        device,
        tensors,
        fit.history,
        trained.summary,
        checkpoint=path,
        files=[trained.history_file, trained.curves],
    )
    context.log.info(
        f"best epoch {fit.best_epoch}/{fit.epochs_run}: val_loss {fit.best_val_loss:.4f}, "
        f"val_acc {fit.best_val_acc:.3f}; temperature {trained.temperature:.3f}"
    )
    return dg.Output(
        str(path),
        metadata={
            **artifact_metadata(path),
            **trained.summary,
            "backbone": config.backbone,
            "weights": config.weights,
            "image_size": tensors.image_size,
            "learning_rate": config.learning_rate,
            "device": f"{device.accelerator} x{device.world_size} ({device.precision})",
            "inference_dtype": str(fit.inference_dtype).removeprefix("torch."),
            "history": markdown_table(fit.history.round(4)),
            "training_curves": dg.MetadataValue.md(
                markdown_image(trained.curves, "training curves")
            ),
            "split_fingerprint": tensors.fingerprint,
            "temperature": round(trained.temperature, 4),
            **mlflow_links,
        },
    )
