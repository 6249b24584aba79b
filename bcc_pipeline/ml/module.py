"""The LightningModule: trains a ClassifierNet with one shared step for train and val, and Adam
over the trainable parameters only. What it trains on (images, or cached frozen-prefix
features) is fixed when it is built.

Optimisation is manual so that one Lightning batch can hold several optimizer batches: the
optimizer still steps every `batch_size` samples, in the sampler's order, exactly as with
batches of `batch_size`, but Lightning's per-batch bookkeeping (about 2 ms, far more than a
head's step on cached features) runs once per chunk."""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from bcc_pipeline.ml.network import ClassifierNet

FUSED_ADAM_DEVICES = ("cpu", "cuda")


class BrainMRIClassifier(pl.LightningModule):
    def __init__(
        self,
        net: ClassifierNet,
        class_names: Sequence[str],
        learning_rate: float,
        batch_size: int,
        train_on_features: bool,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.automatic_optimization = False
        self.net = net
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        self.train_accuracy = MulticlassAccuracy(len(class_names), average="micro")
        self.val_accuracy = MulticlassAccuracy(len(class_names), average="micro")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def model_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        inputs, labels = batch
        if self.hparams.train_on_features:
            logits = self.net.from_features(inputs)
        else:
            logits = self.net(inputs)
        return F.cross_entropy(logits.float(), labels), logits.argmax(dim=1), labels

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        optimizer = self.optimizers()
        inputs, labels = batch
        size = self.hparams.batch_size
        losses, predictions = [], []
        for part in zip(inputs.split(size), labels.split(size), strict=True):
            loss, predicted, _ = self.model_step(part)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            losses.append(loss.detach())
            predictions.append(predicted)
        sizes = torch.tensor([len(part) for part in labels.split(size)], device=labels.device)
        self.train_loss.update(torch.stack(losses), weight=sizes)
        self.train_accuracy.update(torch.cat(predictions), labels)
        self.log("train_loss", self.train_loss, on_step=False, on_epoch=True)
        self.log("train_acc", self.train_accuracy, on_step=False, on_epoch=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        loss, predictions, labels = self.model_step(batch)
        self.val_loss.update(loss, weight=len(labels))
        self.val_accuracy.update(predictions, labels)
        self.log("val_loss", self.val_loss, on_epoch=True)
        self.log("val_acc", self.val_accuracy, on_epoch=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Frozen weights never change, so a checkpoint of the trained part is enough; this
        spares writing the whole backbone each time val_loss improves."""
        frozen = self._frozen_names()
        checkpoint["state_dict"] = {
            name: value for name, value in checkpoint["state_dict"].items() if name not in frozen
        }

    def load_trained_state(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a checkpoint written by on_save_checkpoint: everything but the frozen weights."""
        result = self.load_state_dict(state_dict, strict=False)
        if result.unexpected_keys or set(result.missing_keys) - self._frozen_names():
            raise RuntimeError(f"checkpoint does not match the model: {result}")

    def _frozen_names(self) -> set[str]:
        return {name for name, p in self.named_parameters() if not p.requires_grad}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam with its fused kernel on the CPU and on CUDA (every torch from 2.4 has both):
        the same update in one call instead of one per operation and parameter. A head step on
        cached features in a plain loop (benchmarks/bench_head.py): 1.09 instead of 1.43 ms on
        an H100, 0.56 instead of 0.61 ms on a CPU core. Lightning has moved the module to its
        device by now."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        fused = self.device.type in FUSED_ADAM_DEVICES or None  # None: torch's own choice
        return torch.optim.Adam(trainable, lr=self.hparams.learning_rate, fused=fused)
