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
from bcc_pipeline.errors import ConfigError
from bcc_pipeline.ml.settings import TrainingSettings
from bcc_pipeline.resources import (
    AcceleratorResource,
    ArtifactsResource,
    LaunchChecksResource,
    TrackingResource,
)
from bcc_pipeline.storage import work_dir, write_text

CHECKPOINT_FILE = "model.pt"
CODE_VERSION = "1"
"""Bump when the training logic changes: the UI then marks vit_checkpoint and what follows stale."""


class TrainingConfig(dg.Config, TrainingSettings):
    """The training settings (bcc_pipeline.ml.settings) as the asset's run config."""


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
    import torch

    from bcc_pipeline import garbage

    garbage.import_frozen("bcc_pipeline.ml.training")  # Lightning, torchmetrics, scipy
    from bcc_pipeline.data.tensors import TensorSplits
    from bcc_pipeline.ml.calibration import fit_temperature
    from bcc_pipeline.ml.checkpoint import save_checkpoint
    from bcc_pipeline.ml.plots import training_curves_plot
    from bcc_pipeline.ml.training import fit_classifier

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
    with (
        work_dir(folder) as scratch,
        user_errors(ConfigError),
    ):
        result = fit_classifier(
            tensors,
            config,
            device,
            scratch,
            log=log,
            feature_stores=artifacts.store_dir("features"),
        )
    temperature = fit_temperature(result.val_logits, torch.from_numpy(tensors.labels("val")))
    write_text(folder / "history.csv", result.history.to_csv(index=False))
    curves = training_curves_plot(result.history, folder / "training_curves.png", result.best_epoch)
    summary = {
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_val_loss": round(result.best_val_loss, 4),
        "best_val_acc": round(result.best_val_acc, 4),
        "n_val": result.n_val,
        "train_seconds": round(result.train_seconds, 2),
        "feature_cache_seconds": round(result.feature_seconds, 2),
        "images_per_second": round(result.images_per_second, 1),
        "used_feature_cache": result.used_feature_cache,
        "reused_features": result.reused_features,
        "world_size": result.world_size,
    }
    path = save_checkpoint(
        folder / CHECKPOINT_FILE,
        result.net,
        class_names=tensors.class_names,
        image_size=tensors.image_size,
        backbone=config.backbone,
        weights=config.weights,
        inference_dtype=result.inference_dtype,
        temperature=temperature,
        extra={
            "split_fingerprint": tensors.fingerprint,
            # What the model has seen, so that a later gate never credits it with these images.
            "seen_sha256": {split: tensors.digests(split) for split in ("train", "val")},
            "training": config.model_dump(),
            "metrics": summary,
            "run_id": context.run.run_id,
        },
    )
    mlflow_links = tracking.log_training(
        context.run,
        config,
        device,
        tensors,
        result.history,
        summary,
        checkpoint=path,
        files=[folder / "history.csv", curves],
    )
    context.log.info(
        f"best epoch {result.best_epoch}/{result.epochs_run}: val_loss "
        f"{result.best_val_loss:.4f}, val_acc {result.best_val_acc:.3f}; temperature "
        f"{temperature:.3f}"
    )
    return dg.Output(
        str(path),
        metadata={
            **artifact_metadata(path),
            **summary,
            "backbone": config.backbone,
            "weights": config.weights,
            "image_size": tensors.image_size,
            "learning_rate": config.learning_rate,
            "device": f"{device.accelerator} x{device.world_size} ({device.precision})",
            "inference_dtype": str(result.inference_dtype).removeprefix("torch."),
            "history": markdown_table(result.history.round(4)),
            "training_curves": dg.MetadataValue.md(markdown_image(curves, "training curves")),
            "split_fingerprint": tensors.fingerprint,
            "temperature": round(temperature, 4),
            **mlflow_links,
        },
    )
