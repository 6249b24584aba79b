"""Fit a classifier on preprocessed tensors: network, data module and Trainer built from the
settings, each decided once and read top to bottom in fit_classifier."""

from __future__ import annotations

import functools
import gc
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from bcc_pipeline.data.tensors import TensorSplits
from bcc_pipeline.ml.backbones import check_backbone
from bcc_pipeline.ml.datamodule import MRIDataModule
from bcc_pipeline.ml.devices import TrainerDevice
from bcc_pipeline.ml.features import cached_feature_splits, feature_store_key
from bcc_pipeline.ml.module import BrainMRIClassifier
from bcc_pipeline.ml.network import ClassifierNet, build_network, predict_logits
from bcc_pipeline.ml.settings import TrainingSettings
from bcc_pipeline.quiet import LIGHTNING_BANNER, quieter

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
CACHED_CHUNK = 512
"""Samples per Lightning batch when training on cached features (see module.py)."""
PROGRESS_EVERY_SECONDS = 30.0
"""Within a long epoch, a progress line this often."""


@dataclass
class FitResult:
    net: ClassifierNet
    """The network at its best val_loss epoch, on the CPU, in eval mode."""
    history: pd.DataFrame
    """One row per epoch, numbered from 1: train/val loss and accuracy."""
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    best_val_acc: float
    n_val: int
    train_seconds: float
    feature_seconds: float
    used_feature_cache: bool
    reused_features: bool
    """Whether the cached features came from an earlier run's store."""
    inference_dtype: torch.dtype
    """The precision the trained part saw its inputs in; evaluation should use it too."""
    world_size: int
    images_per_second: float
    val_logits: torch.Tensor
    """float32 logits of the best model on the val split, as validation computed them (on the
    cached features when the cache was used): what the temperature is fitted on."""


class EpochProgress(Callback):
    """One log line per epoch, so a Dagster run log shows training as it happens; within an
    epoch that takes long, a line every `every_seconds` too."""

    def __init__(self, log: Callable[[str], None], every_seconds: float) -> None:
        self.emit = log
        self.every_seconds = every_seconds
        self._epoch_start = self._last = time.monotonic()

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._epoch_start = self._last = time.monotonic()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        module: pl.LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
    ) -> None:
        now = time.monotonic()
        if not trainer.is_global_zero or now - self._last < self.every_seconds:
            return
        self._last = now
        self.emit(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {batch_idx + 1}/"
            f"{trainer.num_training_batches} batches in {now - self._epoch_start:.0f}s"
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Runs after this epoch's validation, so train and val numbers are of one epoch."""
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        self.emit(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: "
            f"train_loss {metrics['train_loss']:.4f} train_acc {metrics['train_acc']:.3f} "
            f"val_loss {metrics['val_loss']:.4f} val_acc {metrics['val_acc']:.3f} "
            f"({time.monotonic() - self._epoch_start:.1f}s)"
        )


@contextmanager
def _quiet_fit(torch_threads: int | None) -> Iterator[None]:
    """For the duration of one fit: silence Lightning's device banner and two warnings that are
    not the user's (frozen blocks stay in eval mode on purpose; a torch deprecation inside
    Lightning), and optionally cap torch's threads. Everything is restored afterwards.

    A head on cached features does tiny matrix work per step, where thread hand-offs cost more
    than they give (10x slower epochs on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    try:
        with quieter(LIGHTNING_BANNER), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`")
            yield
    finally:
        torch.set_num_threads(threads)


def _history(log_dir: Path) -> pd.DataFrame:
    """Per-epoch train and val metrics from the CSV logger, one row per epoch, from 1."""
    frame = pd.read_csv(log_dir / "metrics.csv")
    history = frame.groupby("epoch").max(numeric_only=True).drop(columns=["step"]).reset_index()
    history["epoch"] += 1
    return history


def build_trainer(
    settings: TrainingSettings,
    device: TrainerDevice,
    work_dir: Path,
    log: Callable[[str], None],
) -> tuple[pl.Trainer, ModelCheckpoint, CSVLogger]:
    """The Trainer from config: early stopping and best-val_loss checkpointing."""
    checkpoint = ModelCheckpoint(
        dirpath=work_dir / "lightning",
        filename="best-{epoch}",
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        save_weights_only=True,
    )
    csv_logger = CSVLogger(work_dir, name="logs", version="")
    trainer = pl.Trainer(
        **device.trainer_kwargs(),
        max_epochs=settings.max_epochs,
        callbacks=[
            EarlyStopping("val_loss", patience=settings.early_stopping_patience, mode="min"),
            checkpoint,
            EpochProgress(log, PROGRESS_EVERY_SECONDS),
        ],
        logger=csv_logger,
        deterministic=device.accelerator == "cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        default_root_dir=work_dir,
    )
    return trainer, checkpoint, csv_logger


def _collect_garbage_after(function: Callable[P, R]) -> Callable[P, R]:
    """Run a full garbage collection once `function` has returned. Lightning's trainer, module,
    loops and callbacks refer to one another, so after a fit they (with the optimizer's state
    and the training copy of the data) would wait for Python's next full collection, which
    can come steps later, beside the report's own copy of the model."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        result = function(*args, **kwargs)
        gc.collect()
        return result

    return wrapper


@_collect_garbage_after
def fit_classifier(
    tensors: TensorSplits,
    settings: TrainingSettings,
    device: TrainerDevice,
    work_dir: Path,
    log: Callable[[str], None] = logger.info,
    feature_stores: Path | None = None,
) -> FitResult:
    """Train, keep the best val_loss epoch, and return the network holding those weights.
    Frozen-prefix features are kept under `feature_stores` (one folder per content key) for
    later runs to reuse; without it they live in `work_dir` for this run only."""
    check_backbone(
        settings.backbone, settings.weights, tensors.image_size, settings.trainable_blocks
    )
    pl.seed_everything(settings.seed, workers=True, verbose=False)
    net = build_network(
        len(tensors.class_names),
        tensors.image_size,
        settings.backbone,
        settings.weights,
        settings.trainable_blocks,
    )
    # Decided once: train on cached frozen-prefix features when there is a prefix to cache.
    use_cache = settings.feature_cache == "auto" and net.cacheable
    inference_dtype = device.inference_dtype if use_cache else torch.float32
    # Samples per Lightning batch; the optimizer still steps every settings.batch_size.
    chunk = settings.batch_size * (max(1, CACHED_CHUNK // settings.batch_size) if use_cache else 1)
    feature_seconds = 0.0
    reused = False
    if use_cache:
        key = feature_store_key(
            tensors.fingerprint,
            tensors.image_size,
            settings.backbone,
            settings.weights,
            settings.seed,
            settings.trainable_blocks,
            settings.horizontal_flip,
            inference_dtype,
        )
        start = time.perf_counter()
        splits, reused = cached_feature_splits(
            net,
            tensors,
            device.torch_device,
            inference_dtype,
            settings.horizontal_flip,
            (feature_stores or work_dir) / key,
            settings.feature_batch_size,
            log,
        )
        feature_seconds = time.perf_counter() - start
        verb = "read back stored" if reused else "cached"
        log(
            f"{verb} frozen-prefix features in {feature_seconds:.1f}s ({inference_dtype}, "
            f"{len(splits['train'].views)} views per training image)"
        )
        datamodule = MRIDataModule(splits, chunk, settings.num_workers)
    else:
        datamodule = MRIDataModule.from_tensors(
            tensors, chunk, settings.horizontal_flip, settings.num_workers
        )
    module = BrainMRIClassifier(
        net,
        tensors.class_names,
        settings.learning_rate,
        settings.batch_size,
        train_on_features=use_cache,
    )
    start = time.perf_counter()
    with _quiet_fit(1 if use_cache and settings.trainable_blocks == 0 else None):
        trainer, checkpoint, csv_logger = build_trainer(settings, device, work_dir, log)
        trainer.fit(module, datamodule=datamodule)
    train_seconds = time.perf_counter() - start

    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    module.load_trained_state(best["state_dict"])
    net = module.net.cpu().eval()
    # As validation computed them: on the cached features when the cache was used.
    val_logits = predict_logits(
        net,
        datamodule.splits["val"].views[0] if use_cache else tensors.images("val"),
        device.torch_device,
        forward=ClassifierNet.from_features if use_cache else ClassifierNet.__call__,
    )
    history = _history(Path(csv_logger.log_dir))
    best_row = history.loc[history["val_loss"].idxmin()]
    epochs_run = int(history["epoch"].max())
    seen = epochs_run * len(datamodule.splits["train"].labels)
    return FitResult(
        net=net,
        history=history,
        epochs_run=epochs_run,
        best_epoch=int(best_row["epoch"]),
        best_val_loss=float(best_row["val_loss"]),
        best_val_acc=float(best_row["val_acc"]),
        n_val=len(datamodule.splits["val"].labels),
        train_seconds=train_seconds,
        feature_seconds=feature_seconds,
        used_feature_cache=use_cache,
        reused_features=reused,
        inference_dtype=inference_dtype,
        world_size=device.world_size,
        images_per_second=seen / max(train_seconds + feature_seconds, 1e-9),
        val_logits=val_logits,
    )
