"""The LightningModule: backbone + head, one shared step for train/val/test, Adam over the
trainable parameters only."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from bcc_pipeline.ml.backbones import Normalization, load_backbone, replace_head
from bcc_pipeline.ml.network import ClassifierNet


class BrainMRIClassifier(pl.LightningModule):
    """Takes uint8 NCHW images and normalises them on the device with the backbone's own
    statistics. With `train_on_features` the batches are cached frozen-prefix outputs instead."""

    def __init__(
        self,
        class_names: Sequence[str],
        image_size: int = 224,
        backbone: str = "vit_b_16",
        weights: str = "DEFAULT",
        trainable_blocks: int = 0,
        learning_rate: float = 1e-4,
        train_on_features: bool = False,
        normalization: Normalization | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["normalization"])
        model, default_normalization = load_backbone(backbone, weights, image_size)
        model, head = replace_head(model, len(class_names))
        self.net = ClassifierNet(model, head, trainable_blocks)
        self.normalization = normalization or default_normalization
        self.register_buffer(
            "mean", torch.tensor(self.normalization.mean).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(self.normalization.std).view(1, -1, 1, 1), persistent=False
        )
        num_classes = len(class_names)
        self.train_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.test_accuracy = MulticlassAccuracy(num_classes, average="micro")

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 to the network's input, in the network's dtype."""
        normalized = (images.float() / 255.0 - self.mean.float()) / self.std.float()
        return normalized.to(self.head_dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for uint8 images: the whole model, whatever was cached in training."""
        return self.net(self.normalize(images))

    @torch.no_grad()
    def frozen_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.frozen_features(self.normalize(images))

    def for_inference(self, device: torch.device, dtype: torch.dtype) -> BrainMRIClassifier:
        """An eval-mode copy with its weights in `dtype` on `device` (itself for float32).
        Weights stored in bfloat16 beat autocast on the CPU (~10% for vit_b_16): autocast
        re-casts every weight on every call and turns off the fused attention path."""
        if dtype == torch.float32:
            return self.to(device).eval()
        return copy.deepcopy(self).to(device=device, dtype=dtype).eval()

    def model_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        inputs, labels = batch
        if self.hparams.train_on_features:
            logits = self.net.from_features(inputs.to(self.head_dtype))
        else:
            logits = self(inputs)
        return F.cross_entropy(logits, labels), logits.argmax(dim=1), labels

    @property
    def head_dtype(self) -> torch.dtype:
        return self.net.head.weight.dtype

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        loss, predictions, labels = self.model_step(batch)
        self.train_accuracy(predictions, labels)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        self.log("train_acc", self.train_accuracy, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        loss, predictions, labels = self.model_step(batch)
        self.val_accuracy(predictions, labels)
        self.log("val_loss", loss, on_epoch=True, sync_dist=True)
        self.log("val_acc", self.val_accuracy, on_epoch=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        loss, predictions, labels = self.model_step(batch)
        self.test_accuracy(predictions, labels)
        self.log("test_loss", loss, on_epoch=True, sync_dist=True)
        self.log("test_acc", self.test_accuracy, on_epoch=True)

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
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(trainable, lr=self.hparams.learning_rate)
