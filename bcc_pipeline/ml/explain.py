"""Where the model looked: attention rollout (Abnar & Zuidema, 2020) for Vision Transformers,
Grad-CAM (Selvaraju et al., 2017, through captum) for convolutional backbones. Each map is
scaled to [0, 1] and has the input image's size, ready to lay over it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.models import VisionTransformer

from bcc_pipeline.data.tensors import MappedArray, read_rows
from bcc_pipeline.ml.backbones import BackboneConfigError, backbone_blocks
from bcc_pipeline.ml.network import ClassifierNet, inference_copy, predict_logits
from bcc_pipeline.ml.overlays import overlay_panel, panel_grid, save_png

EXPLAINED_PER_CLASS = 2
MAX_MISCLASSIFIED_EXPLAINED = 10
SAMPLE_SEED = 0
"""Seeds the choice of which test images are explained, so that reruns explain the same ones."""
MAP_NAME_MAX_BYTES = 120
"""The longest explanation-map file name, in UTF-8 bytes: with the 22 that storage.atomic_path
adds for its temp file (`.{name}.{16 hex}.tmp`) still far within the 255 of ext4, XFS, btrfs
or tmpfs (and eCryptfs's 143), and long enough to read which image a map is of."""
NAME_DIGEST_CHARS = 12
"""Hex digits of the digest that ends a shortened name: two long names that share their start
still get different files."""


class ExplanationUnavailableError(ValueError):
    """The backbone has no part this module knows how to explain."""


@dataclass(frozen=True)
class Explanations:
    method: str
    grid: Path
    """All maps in one figure."""
    files: list[Path]
    """One PNG per explained image."""


class Explainer:
    """Explanation maps of one network: attention rollout for a ViT backbone (class-agnostic),
    Grad-CAM of the predicted class for a CNN, computed by one copy of it on `device` with its
    weights in `dtype` (gradients and hooks never touch the caller's model). The report passes
    the precision the model is evaluated in: on a CPU, bfloat16 halves the time of the maps.
    A backbone with neither is an ExplanationUnavailableError here, before any image."""

    def __init__(
        self, net: ClassifierNet, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> None:
        if isinstance(net.backbone, VisionTransformer):
            self.method, self._explain = "attention rollout", _attention_rollout
        else:
            _last_block(net.backbone)
            self.method, self._explain = "Grad-CAM", _grad_cam
        self._net = inference_copy(net, device, dtype)
        self._device = device
        self._dtype = dtype

    @property
    def network(self) -> ClassifierNet:
        """The explainer's own copy, in eval mode: a caller that classifies the same images
        can use it instead of holding a second copy (no hook outlives a call)."""
        return self._net

    def predict(self, images: np.ndarray | MappedArray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """float32 logits of every image (see predict_logits) and, where the map comes out of
        the same forward pass (attention rollout), every image's coarse map for `maps`, in
        float16 (a whole test split's fit in memory), so a caller that classifies images and
        then explains some of them runs the backbone once per image, not twice. None for
        Grad-CAM: its maps need gradients, worth computing only for the images explained."""
        if self._explain is not _attention_rollout:
            return predict_logits(self._net, images, self._device, self._dtype), None
        side = self._net.backbone.image_size // self._net.backbone.patch_size
        coarse = torch.empty(len(images), 1, side, side, dtype=torch.float16)
        done = 0

        def forward_keeping_rollout(net: ClassifierNet, batch: torch.Tensor) -> torch.Tensor:
            nonlocal done
            logits, rollout = _attention_rollout(net, batch)
            coarse[done : done + len(batch)] = rollout.cpu()
            done += len(batch)
            return logits

        logits = predict_logits(
            self._net, images, self._device, self._dtype, forward=forward_keeping_rollout
        )
        return logits, coarse

    def maps(
        self,
        images: np.ndarray | MappedArray,
        coarse: torch.Tensor | None = None,
        batch_size: int = 16,
    ) -> np.ndarray:
        """float32 (N, H, W) maps in [0, 1] for uint8 NCHW images; `coarse`, the images' maps
        from `predict`, saves running the network again."""
        maps = []
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            if coarse is None:
                batch = torch.from_numpy(read_rows(images, start, stop)).to(self._device)
                _, batch_coarse = self._explain(self._net, batch)
            else:
                batch_coarse = coarse[start:stop]
            fine = F.interpolate(
                batch_coarse.float(), size=images.shape[-2:], mode="bilinear", align_corners=False
            )
            maps.append(_unit_range(fine[:, 0]).cpu().numpy())
        height, width = images.shape[-2:]
        return np.concatenate(maps) if maps else np.empty((0, height, width), np.float32)


def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1]; a flat map (nothing stands out) becomes all zeros."""
    flat = maps.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    span = (flat.max(dim=1).values[:, None, None] - low).clamp_min(1e-12)
    return ((maps - low) / span).float()


@torch.no_grad()
def _attention_rollout(
    net: ClassifierNet, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits, and how much the class token draws from each patch through all blocks: per
    block the head-averaged attention plus the residual path (identity), rows renormalised,
    multiplied from the first block to the last. torchvision's blocks call attention with
    need_weights=False; hooks ask each block's attention for its head-averaged weights in the
    same forward pass, and keep them. Only the class token's row of the product is needed, so
    it is carried from the last block back to the first: vector times matrix per block, not
    matrix times matrix."""
    vit = net.backbone
    weights: list[torch.Tensor] = []

    def ask_for_weights(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {**kwargs, "need_weights": True, "average_attn_weights": True}

    def keep_weights(_module: nn.Module, _args: tuple, output: tuple) -> None:
        weights.append(output[1])

    hooks = [
        hook
        for block in vit.encoder.layers
        for hook in (
            block.self_attention.register_forward_pre_hook(ask_for_weights, with_kwargs=True),
            block.self_attention.register_forward_hook(keep_weights),
        )
    ]
    try:
        logits = net(images)
    finally:
        for hook in hooks:
            hook.remove()
    identity = torch.eye(weights[0].shape[-1], device=images.device)
    row = identity[0].expand(len(images), 1, -1)
    for attention in reversed(weights):
        mixed = 0.5 * attention.float() + 0.5 * identity
        row = row @ (mixed / mixed.sum(dim=-1, keepdim=True))
    side = vit.image_size // vit.patch_size
    return logits, row[:, 0, 1:].reshape(len(images), 1, side, side)


def _grad_cam(net: ClassifierNet, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits, and the Grad-CAM of the predicted class at the output of the backbone's
    last block."""
    from captum.attr import LayerGradCam

    with torch.no_grad():
        logits = net(images)
    cam = LayerGradCam(net, _last_block(net.backbone))
    with torch.enable_grad():
        maps = cam.attribute(images, target=logits.argmax(dim=1), relu_attributions=True)
    return logits, maps.detach()


def _last_block(backbone: nn.Module) -> nn.Module:
    try:
        return backbone_blocks(backbone)[-1]
    except BackboneConfigError as err:
        raise ExplanationUnavailableError(
            f"no explanation map for {type(backbone).__name__}: {err}"
        ) from None


def write_explanations(
    explainer: Explainer,
    images: np.ndarray,
    captions: Sequence[str],
    files: Sequence[Path],
    coarse: torch.Tensor | None = None,
) -> list[Image.Image]:
    """One overlay PNG per image, titled with its caption, at `files`; returns the panels.
    `coarse`: the images' maps from Explainer.predict, where it gave them."""
    maps = explainer.maps(images, coarse)
    panels = [
        overlay_panel(image, heat, caption)
        for image, heat, caption in zip(images, maps, captions, strict=True)
    ]
    for panel, file in zip(panels, files, strict=True):
        save_png(panel, file)
    return panels


def explain_examples(
    explainer: Explainer,
    images: MappedArray,
    labels: np.ndarray,
    probabilities: torch.Tensor,
    class_names: Sequence[str],
    paths: Sequence[str],
    folder: Path,
    coarse: torch.Tensor | None = None,
) -> Explanations:
    """Maps of a seeded sample of each class and of the misclassified images (see
    examples_to_explain) as folder/explanations/*.png, and all of them in one grid,
    folder/explanation_grid.png. `coarse`: every image's map from Explainer.predict, where
    it gave them."""
    confidence, predictions = probabilities.max(dim=1)
    chosen = examples_to_explain(
        labels, predictions.numpy(), EXPLAINED_PER_CLASS, MAX_MISCLASSIFIED_EXPLAINED, SAMPLE_SEED
    )
    captions = [
        explanation_caption(
            class_names[predictions[i]],
            float(confidence[i]),
            true=class_names[labels[i]],
            name=PurePath(paths[i]).name,
        )
        for i in chosen
    ]
    selected = np.stack([images[i] for i in chosen])
    files = [folder / "explanations" / map_file_name(i, paths[i]) for i in chosen]
    panels = write_explanations(
        explainer, selected, captions, files, None if coarse is None else coarse[chosen]
    )
    grid = save_png(panel_grid(panels), folder / "explanation_grid.png")
    return Explanations(explainer.method, grid, files)


def examples_to_explain(
    labels: np.ndarray,
    predictions: np.ndarray,
    per_class: int,
    max_misclassified: int,
    seed: int,
) -> list[int]:
    """Indices, in order: a seeded sample of `per_class` images of each class, plus every
    misclassified image up to `max_misclassified` (the first ones in split order)."""
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen.update(rng.choice(members, min(per_class, len(members)), replace=False).tolist())
    chosen.update(np.flatnonzero(labels != predictions)[:max_misclassified].tolist())
    return sorted(chosen)


def explanation_caption(
    predicted: str, probability: float, true: str | None = None, name: str | None = None
) -> str:
    """The title of one map: the image, its true label where known, the prediction and its
    calibrated probability."""
    parts = [name] if name else []
    if true is not None:
        parts.append(f"true {true}" + ("" if true == predicted else " (WRONG)"))
    parts.append(f"predicted {predicted}, p = {probability:.2f}")
    return "\n".join(parts)


def map_file_name(index: int, path: str) -> str:
    """A distinct PNG name per explained image: its position, then its file's stem, at most
    MAP_NAME_MAX_BYTES in UTF-8 (a legal but long image name would otherwise give a map name
    the file system refuses, once atomic_path has added its temp part). A longer stem keeps
    its start, cut between characters, and ends with a digest of the whole file name."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in PurePath(path).stem)
    name = f"{index:04d}_{stem}.png"
    if len(name.encode()) <= MAP_NAME_MAX_BYTES:
        return name
    whole = PurePath(path).name.encode("utf-8", "surrogatepass")  # undecodable bytes too
    digest = hashlib.sha256(whole).hexdigest()[:NAME_DIGEST_CHARS]
    room = MAP_NAME_MAX_BYTES - len(f"{index:04d}__{digest}.png".encode())
    start = stem.encode()[: max(room, 0)].decode(errors="ignore")  # a cut character goes
    return f"{index:04d}_{start}_{digest}.png"
