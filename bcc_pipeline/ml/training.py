"""Fit a classifier on preprocessed tensors: data module, model and Trainer built from settings."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from bcc_pipeline.data.tensors import TensorSplits
from bcc_pipeline.ml.backbones import check_backbone
from bcc_pipeline.ml.datamodule import MRIDataModule
from bcc_pipeline.ml.devices import TrainerDevice
from bcc_pipeline.ml.features import cached_feature_splits
from bcc_pipeline.ml.module import BrainMRIClassifier

logger = logging.getLogger(__name__)
# Frozen blocks are kept in eval mode on purpose (see ClassifierNet.train); the other two are
# Lightning's own chatter (a torch deprecation inside Lightning, an advert), not the user's.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)


@dataclass(frozen=True)
class TrainingSettings:
    """What to train and how; defaults are the seed recipe (frozen vit_b_16, head only)."""

    backbone: str = "vit_b_16"
    weights: str = "DEFAULT"
    trainable_blocks: int = 0
    max_epochs: int = 10
    early_stopping_patience: int = 3
    batch_size: int = 16
    learning_rate: float = 1e-4
    seed: int = 42
    horizontal_flip: bool = True
    num_workers: int = 0
    feature_cache: str = "auto"
    feature_batch_size: int = 64

    def check(self, image_size: int) -> None:
        """Every config mistake, said before any work starts."""
        check_backbone(self.backbone, self.weights, image_size)
        if self.feature_cache not in ("auto", "off"):
            raise ValueError(f"feature_cache must be auto or off; got {self.feature_cache!r}")
        for name in ("max_epochs", "batch_size", "feature_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be above 0")


@dataclass
class FitResult:
    module: BrainMRIClassifier
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    best_val_acc: float
    history: pd.DataFrame
    train_seconds: float
    feature_seconds: float
    used_feature_cache: bool
    world_size: int
    images_per_second: float
    settings: dict = field(default_factory=dict)


class EpochProgress(Callback):
    """One log line per epoch, so a Dagster run log shows training as it happens."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.emit = log

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Runs after this epoch's validation, so train and val numbers are of one epoch."""
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        self.emit(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: "
            f"train_loss {metrics['train_loss']:.4f} train_acc {metrics.get('train_acc', 0):.3f} "
            f"val_loss {metrics['val_loss']:.4f} val_acc {metrics.get('val_acc', 0):.3f}"
        )


@contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """A head on cached features does tiny matrix work per step, where thread hand-offs cost
    more than they give (10x slower epochs on a busy 2-core machine); None leaves it alone."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _history(log_dir: Path) -> pd.DataFrame:
    """Per-epoch train and val metrics from the CSV logger, one row per epoch."""
    frame = pd.read_csv(log_dir / "metrics.csv")
    return frame.groupby("epoch").max(numeric_only=True).drop(columns=["step"]).reset_index()


def build_datamodule(
    module: BrainMRIClassifier,
    tensors: TensorSplits,
    settings: TrainingSettings,
    device: TrainerDevice,
    work_dir: Path,
    log: Callable[[str], None],
) -> tuple[MRIDataModule, float]:
    """Batches of cached frozen-prefix features when there is a frozen prefix to cache
    (switching the module to train on them), else of images; and the caching seconds."""
    if settings.feature_cache == "off" or not module.net.cacheable:
        datamodule = MRIDataModule.from_tensors(
            tensors, settings.batch_size, settings.horizontal_flip, settings.num_workers
        )
        return datamodule, 0.0
    start = time.perf_counter()
    splits = cached_feature_splits(
        module,
        tensors,
        device.torch_device,
        device.inference_dtype,
        settings.horizontal_flip,
        work_dir,
        settings.feature_batch_size,
    )
    seconds = time.perf_counter() - start
    module.cpu().hparams.train_on_features = True
    log(
        f"cached frozen-prefix features in {seconds:.1f}s ({device.inference_dtype}, "
        f"{len(splits['train'].views)} views per training image)"
    )
    return MRIDataModule(splits, settings.batch_size, settings.num_workers), seconds


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
            EpochProgress(log),
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


def fit_classifier(
    tensors: TensorSplits,
    settings: TrainingSettings,
    device: TrainerDevice,
    work_dir: Path,
    log: Callable[[str], None] = logger.info,
) -> FitResult:
    """Train, keep the best val_loss epoch, and return the model holding those weights."""
    settings.check(tensors.image_size)
    pl.seed_everything(settings.seed, workers=True, verbose=False)
    module = BrainMRIClassifier(
        class_names=tensors.class_names,
        image_size=tensors.image_size,
        backbone=settings.backbone,
        weights=settings.weights,
        trainable_blocks=settings.trainable_blocks,
        learning_rate=settings.learning_rate,
    )
    datamodule, feature_seconds = build_datamodule(module, tensors, settings, device, work_dir, log)
    trainer, checkpoint, csv_logger = build_trainer(settings, device, work_dir, log)
    used_feature_cache = bool(module.hparams.train_on_features)
    head_only = used_feature_cache and settings.trainable_blocks == 0
    start = time.perf_counter()
    with _torch_threads(1 if head_only else None):
        trainer.fit(module, datamodule=datamodule)
    train_seconds = time.perf_counter() - start

    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    module.load_trained_state(best["state_dict"])
    module.hparams.train_on_features = False
    history = _history(Path(csv_logger.log_dir))
    best_row = history.loc[history["val_loss"].idxmin()]
    epochs_run = int(history["epoch"].max()) + 1
    seen = epochs_run * len(datamodule.splits["train"].labels)
    return FitResult(
        module=module.cpu().eval(),
        epochs_run=epochs_run,
        best_epoch=int(best_row["epoch"]) + 1,
        best_val_loss=float(best_row["val_loss"]),
        best_val_acc=float(best_row["val_acc"]),
        history=history,
        train_seconds=train_seconds,
        feature_seconds=feature_seconds,
        used_feature_cache=used_feature_cache,
        world_size=device.world_size,
        images_per_second=seen / max(train_seconds + feature_seconds, 1e-9),
        settings=asdict(settings),
    )
