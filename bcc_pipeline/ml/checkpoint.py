"""The model file users keep: plain data only (tensors, strings, numbers), so that
`torch.load(path, weights_only=True)` opens it without trusting pickled code."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
import torchvision

from bcc_pipeline.ml.backbones import Normalization
from bcc_pipeline.ml.network import ClassifierNet, build_network
from bcc_pipeline.storage import atomic_path

CHECKPOINT_FORMAT = "bcc_pipeline.vit_checkpoint/1"
INFERENCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch reports a foreign or corrupt file in many ways
        raise CheckpointError(f"{path} is not a bcc_pipeline checkpoint ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    return payload


def load_classifier(path: Path | str) -> tuple[ClassifierNet, dict[str, Any]]:
    """The network in eval mode, rebuilt without downloading anything, and the checkpoint data."""
    payload = read_checkpoint(path)
    norm = payload["normalization"]
    net = build_network(
        len(payload["class_names"]),
        payload["image_size"],
        payload["backbone"]["name"],
        "none",
        payload["backbone"]["trainable_blocks"],
        Normalization(tuple(norm["mean"]), tuple(norm["std"])),
    )
    net.load_state_dict(payload["state_dict"])
    return net.eval(), payload


def stored_inference_dtype(payload: dict[str, Any]) -> torch.dtype:
    """The precision the checkpoint asks to be evaluated in (float32 for older files)."""
    return INFERENCE_DTYPES.get(payload.get("inference_dtype", "float32"), torch.float32)


def stored_temperature(payload: dict[str, Any]) -> float:
    """The temperature that calibrates the checkpoint's probabilities (1.0 for older files)."""
    return float(payload.get("temperature", 1.0))
