"""The classifier: uint8 images in, logits out. Normalisation with the backbone's own
statistics, the backbone, and a new head, split into a frozen prefix and a trainable suffix.

When the first blocks are frozen their output never changes during training, so it can be
computed once per image and cached (see features.py); `forward` is always the whole model."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torchvision.models import VisionTransformer

from bcc_pipeline.data.tensors import MappedArray, read_rows
from bcc_pipeline.ml.backbones import (
    ALL_BLOCKS,
    Normalization,
    backbone_blocks,
    check_trainable_blocks,
    load_backbone,
    replace_head,
)

INFERENCE_BATCH = 64
"""Images per inference batch on an accelerator, and for a backbone other than a ViT."""
CPU_BATCH_TOKEN_VALUES = 16 * 197 * 768
"""Token activations (tokens x width, all images) per inference batch of a ViT on a CPU: 16
vit_b_16 images at 224 px. Larger batches spill each layer's activations out of the caches;
smaller ones pay per-call overhead. The fastest batches per image measured on 2 cores: 16 for
vit_b_16 at 224 px (99.5 ms an image; 124.4 ms at 64), 64 for vit_tiny at 224 px, 256 at 96 px
(benchmarks/results/bench_inference_batch.txt)."""
CPU_MAX_INFERENCE_BATCH = 256


class ClassifierNet(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Linear,
        trainable_blocks: int,
        normalization: Normalization,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.trainable_blocks = trainable_blocks
        self.normalization = normalization
        self.register_buffer(
            "mean", torch.tensor(normalization.mean).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(normalization.std).view(1, -1, 1, 1), persistent=False
        )
        check_trainable_blocks(backbone, trainable_blocks)
        self._trainable_parts = self._freeze()

    def _freeze(self) -> list[nn.Module]:
        """Freeze everything but the head and the last trainable_blocks blocks; returns the
        backbone parts that still train."""
        if self.trainable_blocks == ALL_BLOCKS:
            return []
        self.backbone.requires_grad_(False)
        if self.trainable_blocks == 0:
            return []
        parts = backbone_blocks(self.backbone)[-self.trainable_blocks :]
        if isinstance(self.backbone, VisionTransformer):
            parts.append(self.backbone.encoder.ln)
        for part in parts:
            part.requires_grad_(True)
        return parts

    def train(self, mode: bool = True) -> ClassifierNet:
        """Frozen blocks stay in eval mode: their batch-norm statistics and dropout must not
        change, or cached features would no longer match the model."""
        super().train(mode)
        if mode and self.trainable_blocks != ALL_BLOCKS:
            self.backbone.eval()
            for block in self._trainable_parts:
                block.train()
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW to the network's input, in the network's dtype."""
        normalized = (images.float() / 255.0 - self.mean.float()) / self.std.float()
        return normalized.to(self.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for uint8 images: the whole model, whatever was cached in training."""
        return self.head(self.backbone(self.normalize(images)))

    @property
    def cacheable(self) -> bool:
        """Whether a frozen prefix exists whose output can be cached."""
        if self.trainable_blocks == 0:
            return True
        if not isinstance(self.backbone, VisionTransformer):
            return False
        return 0 < self.trainable_blocks < len(self.backbone.encoder.layers)

    @torch.no_grad()
    def frozen_features(self, images: torch.Tensor) -> torch.Tensor:
        """Output of the frozen prefix for uint8 images: pooled features for head-only
        training, the token sequence at the block boundary when the last blocks of a ViT train."""
        inputs = self.normalize(images)
        if self.trainable_blocks == 0:
            return self.backbone(inputs)
        vit = self.backbone
        tokens = vit._process_input(inputs)
        tokens = torch.cat([vit.class_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = vit.encoder.dropout(tokens + vit.encoder.pos_embedding)
        return vit.encoder.layers[: self._boundary](tokens)

    def from_features(self, features: torch.Tensor) -> torch.Tensor:
        """The trainable suffix: logits from frozen_features output."""
        features = features.to(self.dtype)
        if self.trainable_blocks == 0:
            return self.head(features)
        vit = self.backbone
        tokens = vit.encoder.ln(vit.encoder.layers[self._boundary :](features))
        return self.head(vit.heads(tokens[:, 0]))

    @property
    def _boundary(self) -> int:
        return len(self.backbone.encoder.layers) - self.trainable_blocks


def build_network(
    num_classes: int,
    image_size: int,
    backbone: str,
    weights: str,
    trainable_blocks: int,
    normalization: Normalization | None = None,
    empty: bool = False,
) -> ClassifierNet:
    """A backbone (pretrained as asked) with a fresh num_classes head. `normalization` overrides
    the weights' own statistics, for a checkpoint that stored them. `empty`: the backbone and
    head get no random initialisation (nor, mostly, storage: see empty_architecture), for
    weights that are about to be loaded (`load_state_dict(..., assign=True)`)."""
    model, weights_normalization = load_backbone(backbone, weights, image_size, empty=empty)
    with torch.device("meta") if empty else contextlib.nullcontext():
        model, head = replace_head(model, num_classes)
    return ClassifierNet(model, head, trainable_blocks, normalization or weights_normalization)


def inference_batch_size(net: ClassifierNet, device: torch.device) -> int:
    """Images per batch for inference on `device` where no batch size is configured."""
    vit = net.backbone
    if device.type != "cpu" or not isinstance(vit, VisionTransformer):
        return INFERENCE_BATCH
    return max(
        1, min(CPU_MAX_INFERENCE_BATCH, CPU_BATCH_TOKEN_VALUES // (vit.seq_length * vit.hidden_dim))
    )


def for_inference(net: ClassifierNet, device: torch.device, dtype: torch.dtype) -> ClassifierNet:
    """For read-only use: `net` itself when it already is in eval mode with every tensor on
    `device` in `dtype` (an explainer's copy, a model just trained on the CPU), else its
    inference_copy. A vit_b_16 copy costs 0.2 s on a CPU, more on the way to a GPU."""
    tensors = [*net.parameters(), *net.buffers()]
    if not net.training and all(t.device == device and t.dtype == dtype for t in tensors):
        return net
    return inference_copy(net, device, dtype)


def inference_copy(net: ClassifierNet, device: torch.device, dtype: torch.dtype) -> ClassifierNet:
    """Always a copy: an eval-mode twin on `device` with its weights in `dtype`, so the caller's
    model never changes device or precision behind its back. Weights stored in bfloat16 beat
    autocast on the CPU (~10% for vit_b_16): autocast re-casts every weight on every call and
    turns off the fused attention path."""
    return copy.deepcopy(net).to(device=device, dtype=dtype).eval()


@torch.inference_mode()
def predict_logits(
    net: ClassifierNet,
    images: np.ndarray | MappedArray,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    batch_size: int | None = None,
    forward: Callable[[ClassifierNet, torch.Tensor], torch.Tensor] = ClassifierNet.__call__,
) -> torch.Tensor:
    """float32 logits of the whole model for uint8 NCHW images, computed on `device` with the
    weights in `dtype` (by `net` itself where it already is so, see for_inference). With
    `forward=ClassifierNet.from_features`, the inputs are cached frozen-prefix features
    instead, and only the trainable suffix runs. batch_size None: inference_batch_size's.
    The logits go straight into one tensor: a small tensor kept per batch would lie between
    the batches' large temporaries and fragment the heap (see features._FeatureFile)."""
    net = for_inference(net, device, dtype)
    batch_size = batch_size or inference_batch_size(net, device)
    logits = torch.empty(len(images), net.head.out_features)
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(read_rows(images, start, start + batch_size))
        logits[start : start + len(batch)] = forward(net, batch.to(device)).cpu()
    return logits
