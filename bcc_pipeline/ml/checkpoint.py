"""The model file users keep: plain data only (tensors, strings, numbers), so that
`torch.load(path, weights_only=True)` opens it without trusting pickled code."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torchvision

from bcc_pipeline.ml.backbones import Normalization
from bcc_pipeline.ml.module import BrainMRIClassifier
from bcc_pipeline.storage import atomic_path

CHECKPOINT_FORMAT = "bcc_pipeline.vit_checkpoint/1"


class CheckpointError(ValueError):
    """The file is not a checkpoint this version can load."""


def save_checkpoint(path: Path | str, module: BrainMRIClassifier, extra: dict[str, Any]) -> Path:
    """Write state dict, class names, preprocessing and backbone config, plus `extra` metadata."""
    hparams = module.hparams
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in module.net.state_dict().items()},
        "class_names": list(hparams.class_names),
        "image_size": int(hparams.image_size),
        "normalization": {
            "mean": list(module.normalization.mean),
            "std": list(module.normalization.std),
            "input": "uint8 RGB, padded to square, resized with antialiasing, scaled to [0, 1]",
        },
        "backbone": {
            "name": hparams.backbone,
            "weights": hparams.weights,
            "trainable_blocks": int(hparams.trainable_blocks),
        },
        "versions": {
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "pytorch_lightning": str(pl.__version__),
            "python": platform.python_version(),
        },
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch reports a foreign or corrupt file in many ways
        raise CheckpointError(f"{path} is not a bcc_pipeline checkpoint ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    return payload


def load_classifier(path: Path | str) -> tuple[BrainMRIClassifier, dict[str, Any]]:
    """The model in eval mode, rebuilt without downloading anything, and the checkpoint data."""
    payload = read_checkpoint(path)
    norm = payload["normalization"]
    module = BrainMRIClassifier(
        class_names=payload["class_names"],
        image_size=payload["image_size"],
        backbone=payload["backbone"]["name"],
        weights="none",
        trainable_blocks=payload["backbone"]["trainable_blocks"],
        normalization=Normalization(tuple(norm["mean"]), tuple(norm["std"])),
    )
    module.net.load_state_dict(payload["state_dict"])
    return module.eval(), payload
