"""The model file users keep: plain data only (tensors, strings, numbers), so that
`torch.load(path, weights_only=True)` opens it without trusting pickled code."""

from __future__ import annotations

import json
import pickle
import platform
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torchvision

from bcc_pipeline.data.images import SNIFF_BYTES, describe_content
from bcc_pipeline.ml.backbones import Normalization
from bcc_pipeline.ml.module import BrainMRIClassifier
from bcc_pipeline.storage import atomic_path

CHECKPOINT_FORMAT = "bcc_pipeline.vit_checkpoint/1"
REQUIRED_KEYS = frozenset({"state_dict", "class_names", "image_size", "normalization", "backbone"})
ZIP_MAGIC = b"PK\x03\x04"
"""torch.save writes a ZIP archive."""
MAX_POINTER_BYTES = 2**20


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
    """The checkpoint's data, loaded as plain data only. `path` may also be a production pointer
    (production_model's current.json), whose "checkpoint" is then read. Every way a file can be
    wrong is a CheckpointError in words; torch's own messages are never passed on, as they
    advise loading with weights_only=False, which would run any code a file carries."""
    path = Path(path)
    head = _head(path)
    if head.lstrip().startswith(b"{"):
        path = _pointer_target(path)
        head = _head(path)
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint")
    if not head.startswith(ZIP_MAGIC):
        raise CheckpointError(f"{path} is not a checkpoint: it is {describe_content(head)}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} was not loaded: it holds objects other than tensors, numbers and strings, "
            "which a bcc_pipeline checkpoint never does"
        ) from None
    except Exception as err:  # torch reports a damaged archive in many ways
        raise CheckpointError(
            f"{path} is a damaged or truncated checkpoint ({type(err).__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    missing = sorted(REQUIRED_KEYS - payload.keys())
    if missing:
        raise CheckpointError(f"{path} is an incomplete checkpoint: it lacks {missing}")
    return payload


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(SNIFF_BYTES)
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from None


def _pointer_target(pointer: Path) -> Path:
    """The model file a production pointer names; a relative name is relative to the pointer."""
    try:
        with pointer.open("rb") as handle:
            target = json.loads(handle.read(MAX_POINTER_BYTES))["checkpoint"]
    except (ValueError, TypeError, KeyError, OSError):
        raise CheckpointError(
            f"{pointer} is a JSON file but not a production pointer (production_model's "
            'current.json, with a "checkpoint" entry); pass it, or a model.pt'
        ) from None
    if not isinstance(target, str):
        raise CheckpointError(f'{pointer}: "checkpoint" must be a file path, not {target!r}')
    return pointer.parent / target


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
    try:
        module.net.load_state_dict(payload["state_dict"])
    except RuntimeError:
        raise CheckpointError(
            f"{path}: its weights do not fit its backbone {payload['backbone']['name']!r}"
        ) from None
    return module.eval(), payload
