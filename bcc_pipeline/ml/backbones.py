"""Torchvision backbones with a new head, their pretrained weights, and the split point between
the frozen prefix (computed once and cached) and the trainable rest."""

from __future__ import annotations

import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import VisionTransformer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_VIT = "vit_tiny"
NO_WEIGHTS = ("none", "")


class BackboneConfigError(ValueError):
    """A backbone, weights or size that cannot work together; said before any training."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable."""


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


def _weights_enum(backbone: str, weights: str) -> torchvision.models.WeightsEnum:
    try:
        enum = torchvision.models.get_model_weights(backbone)
    except (KeyError, ValueError) as err:
        raise BackboneConfigError(f"unknown backbone {backbone!r}") from err
    name = weights.split(".")[-1]
    try:
        return enum[name] if name != "DEFAULT" else enum.DEFAULT
    except KeyError as err:
        choices = ", ".join(["DEFAULT", *enum.__members__])
        raise BackboneConfigError(
            f"{backbone} has no weights {weights!r}; choose one of {choices}, none, or a path"
        ) from err


def _is_local_file(weights: str) -> bool:
    return "/" in weights or weights.endswith((".pt", ".pth")) or Path(weights).is_file()


def _download_state_dict(weights: torchvision.models.WeightsEnum) -> dict[str, torch.Tensor]:
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        raise WeightsUnavailableError(
            f"cannot load pretrained weights {weights} ({type(err).__name__}: {err}). "
            f"Offline? Download {weights.url} on a connected machine and put it at {cached} "
            "(TORCH_HOME sets the cache), or set weights to a local state-dict path, or none."
        ) from err


def _local_state_dict(path: str) -> dict[str, torch.Tensor]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise BackboneConfigError(f"weights file {str(file)!r} does not exist")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a state dict
        raise BackboneConfigError(
            f"weights file {str(file)!r} is not a plain state dict ({err})"
        ) from err


def _build_tiny_vit(image_size: int) -> VisionTransformer:
    return VisionTransformer(
        image_size=image_size,
        patch_size=16,
        num_layers=4,
        num_heads=3,
        hidden_dim=192,
        mlp_dim=768,
        num_classes=1000,
    )


def check_image_size(image_size: int) -> None:
    """Whole 16-pixel ViT patches, at least 2x2 of them."""
    if image_size < 32 or image_size % 16:
        raise BackboneConfigError(
            f"image_size must be a multiple of 16 from 32 up; got {image_size}"
        )


def check_backbone(backbone: str, weights: str, image_size: int) -> None:
    """Fail before any work if backbone, weights and image_size cannot go together."""
    check_image_size(image_size)
    if backbone == TINY_VIT:
        if weights.lower() not in NO_WEIGHTS and not _is_local_file(weights):
            raise BackboneConfigError("vit_tiny has no pretrained weights; set weights: none")
        return
    if backbone not in torchvision.models.list_models(torchvision.models):
        raise BackboneConfigError(
            f"unknown backbone {backbone!r}; use vit_tiny or a torchvision classification model "
            "such as vit_b_16, resnet50, mobilenet_v2"
        )
    if weights.lower() in NO_WEIGHTS or _is_local_file(weights):
        return
    enum = _weights_enum(backbone, weights)
    min_size = enum.meta.get("min_size", (1, 1))[0]
    crop = enum.transforms().crop_size[0]
    if backbone.startswith("vit_") and crop != image_size:
        raise BackboneConfigError(
            f"{backbone} with weights {enum} needs image_size {crop}; got {image_size}"
        )
    if image_size < min_size:
        raise BackboneConfigError(
            f"{backbone} with weights {enum} needs image_size of at least {min_size}"
        )


def load_backbone(backbone: str, weights: str, image_size: int) -> tuple[nn.Module, Normalization]:
    """The torchvision model, pretrained as asked, and the normalisation its weights expect."""
    check_backbone(backbone, weights, image_size)
    pretrained = weights.lower() not in NO_WEIGHTS and not _is_local_file(weights)
    if backbone == TINY_VIT:
        model = _build_tiny_vit(image_size)
    else:
        sized = {"image_size": image_size} if backbone.startswith("vit_") and not pretrained else {}
        model = torchvision.models.get_model(backbone, weights=None, **sized)
    normalization = Normalization()
    if _is_local_file(weights):
        _load_state_dict(model, _local_state_dict(weights), weights)
    elif pretrained:
        enum = _weights_enum(backbone, weights)
        _load_state_dict(model, _download_state_dict(enum), str(enum))
        transform = enum.transforms()
        normalization = Normalization(tuple(transform.mean), tuple(transform.std))
    return model, normalization


def _load_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        raise BackboneConfigError(
            f"weights {source!r} do not fit {type(model).__name__}: {str(err).splitlines()[0]}"
        ) from err


def replace_head(model: nn.Module, num_classes: int) -> tuple[nn.Module, nn.Linear]:
    """Swap the last Linear layer (ViT heads.head, ResNet fc, VGG/MobileNet classifier[-1], ...)
    for an Identity and return a fresh Linear for num_classes: model(x) is then the feature
    vector the head reads."""
    name = [n for n, module in model.named_modules() if isinstance(module, nn.Linear)][-1]
    old_head = model.get_submodule(name)
    parent_name, _, attribute = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attribute, nn.Identity())
    return model, nn.Linear(old_head.in_features, num_classes)


def backbone_blocks(model: nn.Module) -> list[nn.Module]:
    """The stages trainable_blocks counts from the end, plus what follows the last one."""
    if isinstance(model, VisionTransformer):
        return list(model.encoder.layers)
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        return [model.layer1, model.layer2, model.layer3, model.layer4]
    if isinstance(getattr(model, "features", None), nn.Sequential):
        return list(model.features)
    raise BackboneConfigError(
        f"{type(model).__name__} has no block structure this pipeline knows; "
        "use trainable_blocks 0 or -1"
    )
