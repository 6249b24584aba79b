"""A training run's folder: the checkpoint of the best epoch, with its calibration temperature,
what it has seen and its metrics, beside its history and training curves. Plain Python:
vit_checkpoint picks the device and the folder, calls train_checkpoint, records what it
returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bcc_pipeline.data.tensors import TensorSplits
from bcc_pipeline.ml.calibration import fit_temperature
from bcc_pipeline.ml.checkpoint import save_checkpoint
from bcc_pipeline.ml.devices import TrainerDevice
from bcc_pipeline.ml.plots import training_curves_plot
from bcc_pipeline.ml.settings import TrainingSettings
from bcc_pipeline.ml.training import FitResult, fit_classifier
from bcc_pipeline.storage import work_dir, write_text

CHECKPOINT_FILE = "model.pt"
HISTORY_FILE = "history.csv"


@dataclass(frozen=True)
class TrainedCheckpoint:
    path: Path
    fit: FitResult
    temperature: float
    summary: dict
    """The fit's numbers, as the checkpoint stores them under `metrics`."""
    history_file: Path
    curves: Path


def train_checkpoint(
    tensors: TensorSplits,
    settings: TrainingSettings,
    device: TrainerDevice,
    folder: Path,
    run_id: str,
    log: Callable[[str], None],
    feature_stores: Path | None = None,
) -> TrainedCheckpoint:
    """Fit (in a scratch folder inside `folder`, gone afterwards), fit the temperature on the
    validation logits, and write the checkpoint, its history and its curves into `folder`."""
    with work_dir(folder) as scratch:
        fit = fit_classifier(tensors, settings, device, scratch, log, feature_stores)
    temperature = fit_temperature(fit.val_logits, torch.from_numpy(tensors.labels("val")))
    history_file = write_text(folder / HISTORY_FILE, fit.history.to_csv(index=False))
    curves = training_curves_plot(fit.history, folder / "training_curves.png", fit.best_epoch)
    summary = {
        "epochs_run": fit.epochs_run,
        "best_epoch": fit.best_epoch,
        "best_val_loss": round(fit.best_val_loss, 4),
        "best_val_acc": round(fit.best_val_acc, 4),
        "n_val": fit.n_val,
        "train_seconds": round(fit.train_seconds, 2),
        "feature_cache_seconds": round(fit.feature_seconds, 2),
        "images_per_second": round(fit.images_per_second, 1),
        "used_feature_cache": fit.used_feature_cache,
        "reused_features": fit.reused_features,
        "world_size": fit.world_size,
    }
    path = save_checkpoint(
        folder / CHECKPOINT_FILE,
        fit.net,
        class_names=tensors.class_names,
        image_size=tensors.image_size,
        backbone=settings.backbone,
        weights=settings.weights,
        inference_dtype=fit.inference_dtype,
        temperature=temperature,
        extra={
            "split_fingerprint": tensors.fingerprint,
            # What the model has seen, so that a later gate never credits it with these images.
            "seen_sha256": {split: tensors.digests(split) for split in ("train", "val")},
            "training": settings.model_dump(),
            "metrics": summary,
            "run_id": run_id,
        },
    )
    return TrainedCheckpoint(path, fit, temperature, summary, history_file, curves)
