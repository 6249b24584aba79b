"""Torchvision backbones with a new head, their pretrained weights, and the split point between
the frozen prefix (computed once and cached) and the trainable rest."""

from __future__ import annotations

import difflib
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import VisionTransformer

from bcc_pipeline.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_VIT = "vit_tiny"
NO_WEIGHTS = ("none", "")
MIN_IMAGE_SIZE = 32
DEFAULT_IMAGE_SIZE = 224
ALL_BLOCKS = -1
RESCALES_ITS_INPUT = ("googlenet", "inception_v3")
"""Their pretrained weights expect the model to rescale ImageNet-normalised input itself; their
builders warn unless told how to initialise."""


class BackboneConfigError(ConfigError):
    """A backbone, weights, size or trainable part that cannot work together."""


class WeightsUnavailableError(ConfigError):
    """Pretrained weights are neither cached nor downloadable."""


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


def is_local_file(weights: str) -> bool:
    """Whether `weights` names a local state-dict file rather than torchvision weights."""
    return "/" in weights or weights.endswith((".pt", ".pth")) or Path(weights).is_file()


def _is_pretrained(weights: str) -> bool:
    return weights.lower() not in NO_WEIGHTS and not is_local_file(weights)


def _weights_enum(backbone: str, weights: str) -> torchvision.models.WeightsEnum:
    enum = torchvision.models.get_model_weights(backbone)
    name = weights.split(".")[-1]
    try:
        return enum[name] if name != "DEFAULT" else enum.DEFAULT
    except KeyError as err:
        choices = ", ".join(["DEFAULT", *enum.__members__])
        raise BackboneConfigError(
            f"{backbone} has no weights {weights!r}; choose one of {choices}, none, or the path "
            "of a local state-dict file",
            setting="weights",
        ) from err


def _architecture(backbone: str, image_size: int, pretrained: bool) -> nn.Module:
    """The untrained network, randomly initialised (see empty_architecture)."""
    if backbone == TINY_VIT:
        if image_size < MIN_IMAGE_SIZE or image_size % 16:
            raise BackboneConfigError(
                f"vit_tiny takes whole 16-pixel patches: image_size must be a multiple of 16 from "
                f"{MIN_IMAGE_SIZE} up; got {image_size}",
                setting="image_size",
            )
        return VisionTransformer(
            image_size=image_size,
            patch_size=16,
            num_layers=4,
            num_heads=3,
            hidden_dim=192,
            mlp_dim=768,
            num_classes=1000,
        )
    known = torchvision.models.list_models(torchvision.models)
    if backbone not in known:
        close = difflib.get_close_matches(backbone, [*known, TINY_VIT], n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise BackboneConfigError(
            f"unknown backbone {backbone!r}; use vit_tiny or a torchvision classification model "
            f"such as vit_b_16, resnet50, mobilenet_v2.{hint}",
            setting="backbone",
        )
    # Built for one input size: from scratch any size it takes; pretrained, their own.
    options = {} if pretrained else _one_size_option(backbone, image_size)
    if backbone in RESCALES_ITS_INPUT:  # as torchvision builds them, without its warning
        options.update(transform_input=pretrained, init_weights=not pretrained)
    try:
        return torchvision.models.get_model(backbone, weights=None, **options)
    except (AssertionError, ValueError) as err:  # patches or windows must tile the image
        tiles = "224 (7-wide windows at 1/32 scale)" if "maxvit" in backbone else "its patch size"
        raise BackboneConfigError(
            f"{backbone} cannot take {image_size}-pixel images ({str(err).splitlines()[0]}); "
            f"use a multiple of {tiles}",
            setting="image_size",
        ) from err


def _one_size_option(backbone: str, image_size: int) -> dict:
    """For an architecture built for one input size, the builder argument that sets it."""
    if backbone.startswith("vit_"):
        return {"image_size": image_size}
    if backbone.startswith("maxvit_"):
        return {"input_size": (image_size, image_size)}
    return {}


def empty_architecture(backbone: str, image_size: int, pretrained: bool) -> nn.Module:
    """The untrained network without random initialisation, for checking a config or for
    weights about to be loaded with `load_state_dict(..., assign=True)`: built on the meta
    device, so its parameters take no memory and no time (vit_b_16 takes 0.6 s to initialise
    on a CPU). RegNets compute their stage widths with tensors while they are built, which the
    meta device cannot hold values for; they alone are built with random weights."""
    try:
        with torch.device("meta"):
            return _architecture(backbone, image_size, pretrained)
    except NotImplementedError:  # "Cannot copy out of meta tensor": a width read back
        return _architecture(backbone, image_size, pretrained)


def _check_image_size(backbone: str, weights: str, image_size: int) -> None:
    if backbone == TINY_VIT:
        return
    enum = torchvision.models.get_model_weights(backbone)
    if _is_pretrained(weights):
        chosen = _weights_enum(backbone, weights)
        crop = chosen.transforms().crop_size[0]
        if _one_size_option(backbone, image_size) and crop != image_size:
            raise BackboneConfigError(
                f"{backbone} with weights {chosen} needs image_size {crop}; got {image_size}",
                setting="image_size",
            )
        min_size = chosen.meta.get("min_size", (1, 1))[0]
    elif _one_size_option(backbone, image_size):
        min_size = 1  # built for image_size; whether it tiles was checked when it was built
    else:
        min_size = enum.DEFAULT.meta.get("min_size", (1, 1))[0]  # what the architecture takes
    min_size = max(min_size, MIN_IMAGE_SIZE)
    if image_size < min_size:
        raise BackboneConfigError(
            f"{backbone} needs image_size of at least {min_size}; got {image_size}",
            setting="image_size",
        )


def check_backbone(
    backbone: str, weights: str, image_size: int | None, trainable_blocks: int
) -> None:
    """Every mistake in these four settings, found in a second without data or training: the
    network is built on the meta device (no memory, no weights), and a local weights file is
    loaded into it to prove that it fits. With image_size None (not known yet) the size rules
    wait until it is."""
    pretrained = _is_pretrained(weights)
    if backbone == TINY_VIT and pretrained:
        raise BackboneConfigError(
            "vit_tiny has no pretrained weights; set weights: none", setting="weights"
        )
    model = empty_architecture(backbone, image_size or DEFAULT_IMAGE_SIZE, pretrained)
    if image_size is not None:
        _check_image_size(backbone, weights, image_size)
    elif pretrained:
        _weights_enum(backbone, weights)
    _head_name(model)
    check_trainable_blocks(model, trainable_blocks)
    if is_local_file(weights):
        state_dict = _local_state_dict(weights, mmap=True)  # shapes are all the check reads
        if image_size is not None:
            _load_state_dict(model, state_dict, weights)


def weights_origin(backbone: str, weights: str) -> str:
    """Where the starting weights came from, in words, for the model card."""
    if is_local_file(weights):
        return f"a local state-dict file, {weights}"
    if not _is_pretrained(weights) or backbone == TINY_VIT:
        return "random initialisation (no pretrained weights)"
    return f"torchvision's pretrained {_weights_enum(backbone, weights)}"


def fetch_weights(backbone: str, weights: str) -> Path | None:
    """The cached file of pretrained weights, downloaded first if it is not there yet; None
    for random init or a local file. Offline without the file, the error says where to put it."""
    if not _is_pretrained(weights) or backbone == TINY_VIT:
        return None
    enum = _weights_enum(backbone, weights)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    match = torch.hub.HASH_REGEX.search(cached.name)
    try:
        torch.hub.download_url_to_file(
            enum.url, str(cached), match.group(1) if match else None, progress=False
        )
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        raise WeightsUnavailableError(
            f"cannot download pretrained weights {enum} ({type(err).__name__}: {err}). "
            f"Offline? Download {enum.url} on a connected machine and put it at {cached} "
            "(TORCH_HOME sets the cache), or set weights to a local state-dict path, or none.",
            setting="weights",
        ) from err
    return cached


def _local_state_dict(path: str, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The file's tensors; with `mmap`, mapped rather than read, for a look at their shapes
    (a model given mapped tensors would read the file for as long as it lives, and see it
    change or vanish under it)."""
    file = Path(path).expanduser()
    if not file.exists():
        raise BackboneConfigError(f"weights file {str(file)!r} does not exist", setting="weights")
    if not file.is_file():
        what = "a folder" if file.is_dir() else "not a regular file (a pipe or device)"
        raise BackboneConfigError(
            f"weights {str(file)!r} is {what}; give the state-dict file itself", setting="weights"
        )
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises many types for a file that is not a state dict
        raise BackboneConfigError(
            f"weights file {str(file)!r} is not a torch state dict: empty, damaged or of "
            f"another kind ({type(err).__name__}: {str(err).splitlines()[0]})",
            setting="weights",
        ) from err


def _load_state_dict(model: nn.Module, state_dict: object, source: str) -> None:
    if not isinstance(state_dict, dict):
        raise BackboneConfigError(
            f"weights {source!r} hold a {type(state_dict).__name__}, not a state dict",
            setting="weights",
        )
    if isinstance(state_dict.get("state_dict"), dict):
        raise BackboneConfigError(
            f"weights {source!r} are a training checkpoint (a bcc_pipeline model.pt or a "
            "Lightning .ckpt: the tensors under 'state_dict', with other entries), not the "
            f"plain state dict of a {type(model).__name__}: use torchvision's weights file, "
            "DEFAULT, or none",
            setting="weights",
        )
    try:
        model.load_state_dict(state_dict, assign=True)
    except RuntimeError as err:
        raise BackboneConfigError(
            f"weights {source!r} do not fit {type(model).__name__}: {str(err).splitlines()[0]}",
            setting="weights",
        ) from err
    model.float()  # the file's own precision came with its tensors; the model trains in float32


def load_backbone(
    backbone: str, weights: str, image_size: int, empty: bool = False
) -> tuple[nn.Module, Normalization]:
    """The torchvision model, pretrained as asked, and the normalisation its weights expect.
    Loaded weights replace an empty architecture: nothing is initialised only to be
    overwritten. `empty`: no weights at all (see empty_architecture), for a caller that loads
    its own; `weights` then only decides the architecture's size rules."""
    pretrained = _is_pretrained(weights)
    local = is_local_file(weights)
    cached = None if empty or local else fetch_weights(backbone, weights)
    normalization = Normalization()
    if empty:
        model = empty_architecture(backbone, image_size, pretrained)
    elif local:
        model = empty_architecture(backbone, image_size, pretrained)
        _load_state_dict(model, _local_state_dict(weights), weights)
    elif cached is None:
        model = _architecture(backbone, image_size, pretrained)
    else:
        model = empty_architecture(backbone, image_size, pretrained)
        state_dict = torch.load(cached, map_location="cpu", weights_only=True)
        _load_state_dict(model, state_dict, str(cached))
        transform = _weights_enum(backbone, weights).transforms()
        normalization = Normalization(tuple(transform.mean), tuple(transform.std))
    return _without_auxiliary_classifiers(model), normalization


def _without_auxiliary_classifiers(model: nn.Module) -> nn.Module:
    """GoogLeNet and Inception v3 return extra logits from side branches while they train;
    training here reads one output, so the branches go (once their weights are loaded: the
    pretrained files hold them), as torchvision itself does unless asked to keep them."""
    if getattr(model, "aux_logits", False):
        model.aux_logits = False
        for branch in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, branch):
                setattr(model, branch, None)
    return model


def replace_head(model: nn.Module, num_classes: int) -> tuple[nn.Module, nn.Linear]:
    """Swap the last Linear layer (ViT heads.head, ResNet fc, VGG/MobileNet classifier[-1], ...)
    for an Identity and return a fresh Linear for num_classes: model(x) is then the feature
    vector the head reads."""
    name = _head_name(model)
    old_head = model.get_submodule(name)
    parent_name, _, attribute = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attribute, nn.Identity())
    return model, nn.Linear(old_head.in_features, num_classes)


def _head_name(model: nn.Module) -> str:
    """The classifier layer replace_head swaps: the network's last Linear layer."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:  # SqueezeNet classifies with a convolution
        raise BackboneConfigError(
            f"{type(model).__name__} has no Linear classifier layer to replace with a new head; "
            "choose a backbone that ends in one (a ViT, ResNet, EfficientNet, ConvNeXt, ...)",
            setting="backbone",
        )
    return linears[-1]


def backbone_blocks(model: nn.Module) -> list[nn.Module]:
    """The stages trainable_blocks counts from the end."""
    if isinstance(model, VisionTransformer):
        return list(model.encoder.layers)
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        return [model.layer1, model.layer2, model.layer3, model.layer4]
    if isinstance(getattr(model, "features", None), nn.Sequential):
        return list(model.features)
    if isinstance(getattr(model, "trunk_output", None), nn.Sequential):  # RegNet's four stages
        return list(model.trunk_output)
    raise BackboneConfigError(
        f"{type(model).__name__} has no block structure this pipeline knows; "
        "use trainable_blocks 0 or -1",
        setting="trainable_blocks",
    )


def check_trainable_blocks(model: nn.Module, trainable_blocks: int) -> None:
    """0 (head only) and -1 (everything) fit any backbone; k must not exceed its blocks."""
    if trainable_blocks < ALL_BLOCKS:
        raise BackboneConfigError(
            "trainable_blocks must be -1 (all), 0 (head only) or k > 0",
            setting="trainable_blocks",
        )
    if trainable_blocks > 0 and trainable_blocks > len(backbone_blocks(model)):
        raise BackboneConfigError(
            f"trainable_blocks {trainable_blocks} exceeds the {len(backbone_blocks(model))} "
            f"blocks of {type(model).__name__}; use -1 to train everything",
            setting="trainable_blocks",
        )
