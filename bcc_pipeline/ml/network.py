"""A backbone plus a new head, split into a frozen prefix and a trainable suffix.

When the first blocks are frozen their output never changes during training, so it can be
computed once per image and cached (see features.py); `forward` is always the whole model."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import VisionTransformer

from bcc_pipeline.ml.backbones import BackboneConfigError, backbone_blocks

ALL_BLOCKS = -1


class ClassifierNet(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Linear, trainable_blocks: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.trainable_blocks = trainable_blocks
        self._freeze()

    def _freeze(self) -> None:
        self._trainable_parts: list[nn.Module] = []
        if self.trainable_blocks == ALL_BLOCKS:
            return
        if self.trainable_blocks < ALL_BLOCKS:
            raise BackboneConfigError("trainable_blocks must be -1 (all), 0 (head only) or k > 0")
        self.backbone.requires_grad_(False)
        if self.trainable_blocks == 0:
            return
        blocks = backbone_blocks(self.backbone)
        if self.trainable_blocks > len(blocks):
            raise BackboneConfigError(
                f"trainable_blocks {self.trainable_blocks} exceeds the {len(blocks)} blocks of "
                f"{type(self.backbone).__name__}; use -1 to train everything"
            )
        self._trainable_parts = blocks[-self.trainable_blocks :]
        if isinstance(self.backbone, VisionTransformer):
            self._trainable_parts.append(self.backbone.encoder.ln)
        for part in self._trainable_parts:
            part.requires_grad_(True)

    def train(self, mode: bool = True) -> ClassifierNet:
        """Frozen blocks stay in eval mode: their batch-norm statistics and dropout must not
        change, or cached features would no longer match the model."""
        super().train(mode)
        if mode and self.trainable_blocks != ALL_BLOCKS:
            self.backbone.eval()
            for block in self._trainable_parts:
                block.train()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    @property
    def cacheable(self) -> bool:
        """Whether a frozen prefix exists whose output can be cached."""
        if self.trainable_blocks == 0:
            return True
        blocks_total = (
            len(self.backbone.encoder.layers) if isinstance(self.backbone, VisionTransformer) else 0
        )
        return 0 < self.trainable_blocks < blocks_total

    def frozen_features(self, images: torch.Tensor) -> torch.Tensor:
        """Output of the frozen prefix: pooled features for head-only training, the token
        sequence at the block boundary when the last blocks of a ViT train."""
        if self.trainable_blocks == 0:
            return self.backbone(images)
        vit = self.backbone
        tokens = vit._process_input(images)
        tokens = torch.cat([vit.class_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = vit.encoder.dropout(tokens + vit.encoder.pos_embedding)
        return vit.encoder.layers[: self._boundary](tokens)

    def from_features(self, features: torch.Tensor) -> torch.Tensor:
        """The trainable suffix: logits from frozen_features output."""
        if self.trainable_blocks == 0:
            return self.head(features)
        vit = self.backbone
        tokens = vit.encoder.ln(vit.encoder.layers[self._boundary :](features))
        return self.head(vit.heads(tokens[:, 0]))

    @property
    def _boundary(self) -> int:
        return len(self.backbone.encoder.layers) - self.trainable_blocks
