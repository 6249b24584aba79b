"""The model file users keep: plain data only (tensors, strings, numbers), so that
`torch.load(path, weights_only=True)` opens it without trusting pickled code."""

from __future__ import annotations

import json
import math
import pickle
import platform
import stat
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
import torchvision

from bcc_pipeline.data.images import SNIFF_BYTES, describe_content
from bcc_pipeline.errors import ConfigError
from bcc_pipeline.ml.backbones import Normalization
from bcc_pipeline.ml.network import ClassifierNet, build_network
from bcc_pipeline.storage import atomic_path

CHECKPOINT_FORMAT = "bcc_pipeline.vit_checkpoint/1"
INFERENCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
REQUIRED_KEYS = frozenset({"state_dict", "class_names", "image_size", "normalization", "backbone"})
ZIP_MAGIC = b"PK\x03\x04"
"""torch.save writes a ZIP archive."""
MAX_POINTER_BYTES = 2**20


class CheckpointError(ValueError):
    """The file is not a checkpoint this version can load."""


def save_checkpoint(
    path: Path | str,
    net: ClassifierNet,
    *,
    class_names: Sequence[str],
    image_size: int,
    backbone: str,
    weights: str,
    inference_dtype: torch.dtype,
    extra: dict[str, Any],
    temperature: float = 1.0,
) -> Path:
    """Write the weights with everything needed to use them: class names, input size,
    normalisation, backbone config, the precision to evaluate in, the temperature that
    calibrates its probabilities (1.0: uncalibrated), plus `extra` metadata."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "class_names": list(class_names),
        "image_size": int(image_size),
        "normalization": {
            "mean": list(net.normalization.mean),
            "std": list(net.normalization.std),
            "input": "uint8 RGB, padded to square, resized with antialiasing, scaled to [0, 1]",
        },
        "backbone": {
            "name": backbone,
            "weights": weights,
            "trainable_blocks": int(net.trainable_blocks),
        },
        # The precision the head was trained against (that of the cached frozen features);
        # evaluating in it reproduces the validation numbers.
        "inference_dtype": str(inference_dtype).removeprefix("torch."),
        # softmax(logits / temperature) are calibrated probabilities (fitted on val).
        "temperature": float(temperature),
        "versions": {
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "pytorch_lightning": version("pytorch-lightning"),
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
    _check_numbers(path, payload)
    return payload


def _check_numbers(path: Path, payload: dict[str, Any]) -> None:
    """Refuse a temperature or normalisation that no trained model has: a temperature of 0 or
    a std of 0 turns every probability into NaN, and a negative temperature silently reverses
    which class wins."""
    temperature = payload.get("temperature", 1.0)
    if not (_finite(temperature) and temperature > 0):
        raise CheckpointError(
            f"{path} is a damaged checkpoint: its temperature {temperature!r} is not a positive "
            "finite number"
        )
    norm = payload["normalization"]
    mean, std = (norm.get("mean"), norm.get("std")) if isinstance(norm, dict) else (None, None)
    for values in (mean, std):
        three = isinstance(values, list | tuple) and len(values) == 3
        if not (three and all(map(_finite, values))):
            raise CheckpointError(
                f"{path} is a damaged checkpoint: its normalization needs a mean and a std of "
                f"three finite numbers (R, G, B), not mean {mean!r}, std {std!r}"
            )
    if min(std) <= 0:
        raise CheckpointError(
            f"{path} is a damaged checkpoint: its normalization std {list(std)} is not above 0"
        )


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _head(path: Path) -> bytes:
    """The file's first bytes. Anything but a regular file is refused unopened: reading a
    named pipe would wait forever for a writer."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise CheckpointError(
                f"cannot read checkpoint {path}: not a regular file (a folder, pipe or device)"
            )
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


def load_classifier(path: Path | str) -> tuple[ClassifierNet, dict[str, Any]]:
    """The network in eval mode, rebuilt without downloading anything, and the checkpoint data.
    Built empty and given the checkpoint's tensors (a strict load: every weight and persistent
    buffer): no random initialisation of weights that are overwritten at once."""
    payload = read_checkpoint(path)
    norm, backbone, size = payload["normalization"], payload["backbone"], payload["image_size"]
    try:
        net = build_network(
            len(payload["class_names"]),
            size,
            backbone["name"],
            backbone["weights"],  # builds the same architecture; loads nothing
            backbone["trainable_blocks"],
            Normalization(tuple(norm["mean"]), tuple(norm["std"])),
            empty=True,
        )
    except ConfigError as err:
        # The message's advice (after "; ") is for a run config, which cannot mend a file.
        raise CheckpointError(
            f"{path} names backbone {backbone['name']!r} (image_size {size}, trainable_blocks "
            f"{backbone['trainable_blocks']}), which this version of bcc_pipeline cannot build: "
            f"{str(err).split('; ')[0]}"
        ) from None
    try:
        net.load_state_dict(payload["state_dict"], assign=True)
    except RuntimeError:
        raise CheckpointError(
            f"{path}: its weights do not fit its backbone {payload['backbone']['name']!r}"
        ) from None
    return net.eval(), payload


def stored_inference_dtype(payload: dict[str, Any]) -> torch.dtype:
    """The precision the checkpoint asks to be evaluated in (float32 for older files)."""
    return INFERENCE_DTYPES.get(payload.get("inference_dtype", "float32"), torch.float32)


def stored_temperature(payload: dict[str, Any]) -> float:
    """The temperature that calibrates the checkpoint's probabilities (1.0 for older files)."""
    return float(payload.get("temperature", 1.0))
