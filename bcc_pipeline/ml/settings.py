"""What to train and how, and on what: the one declaration of the training and device settings.
The Dagster config of `vit_checkpoint` and the `accelerator` resource are these models; the ML
code reads them as they are. No torch import here, so the code
location can describe and check it without loading a deep-learning stack."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainingSettings(BaseModel):
    """Defaults are the seed recipe: frozen ImageNet vit_b_16, a new head, Adam 1e-4, batch 16,
    up to 10 epochs with early stopping on val_loss (patience 3)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backbone: str = Field(
        default="vit_b_16",
        description=(
            "A torchvision classification model name (vit_b_16, resnet50, ...), or vit_tiny "
            "(4 blocks, 192 wide, random init) for demos and tests."
        ),
    )
    weights: str = Field(
        default="DEFAULT",
        description=(
            "DEFAULT or a torchvision weights name (downloaded into the torch cache), none "
            "(random init), or a path to a local state-dict file (air-gapped sites)."
        ),
    )
    trainable_blocks: int = Field(
        default=0,
        ge=-1,
        description="0 trains the head only; k also the last k encoder blocks; -1 everything.",
    )
    max_epochs: int = Field(default=10, ge=1, description="Upper bound on epochs.")
    early_stopping_patience: int = Field(
        default=3, ge=0, description="Stop after this many epochs without a lower val_loss."
    )
    batch_size: int = Field(default=16, ge=1, description="Training batch size per device.")
    learning_rate: float = Field(
        default=1e-4, gt=0, allow_inf_nan=False, description="Adam learning rate."
    )
    seed: int = Field(
        default=42,
        ge=0,
        le=2**32 - 1,
        description="Seeds init, shuffling and augmentation (0 to 2**32 - 1: what numpy takes).",
    )
    horizontal_flip: bool = Field(
        default=True, description="Random left-right flip of training images (never val/test)."
    )
    num_workers: int = Field(default=0, ge=0, description="DataLoader worker processes.")
    feature_cache: Literal["auto", "off"] = Field(
        default="auto",
        description=(
            "auto: when a frozen prefix exists, compute it once per image and view (image and "
            "mirror) in reduced precision and train the rest on the cache. off: full forward "
            "pass every epoch."
        ),
    )
    feature_batch_size: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Batch size of the one pass over the frozen prefix (inference only); unset: 64 on "
            "a GPU, on a CPU as many as keep a ViT's activations in cache (16 vit_b_16 images "
            "at 224 px)."
        ),
    )


class DeviceSettings(BaseModel):
    """Where training runs. Defaults: the best device here (a GPU, then MPS, then the CPU),
    full precision, one process. Values are checked against this machine by TrainerDevice,
    not by pydantic bounds: the resource is built before the launch check, and a bound failing
    there would be a stack trace instead of a line among the run's other problems."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accelerator: str = Field(
        default="auto",
        description="auto, cpu, gpu (CUDA) or mps. auto picks a GPU, then MPS, then the CPU.",
    )
    devices: Any = Field(
        default="auto",
        description=(
            "As in Lightning: a count (2), GPU ids ([0, 1] or '0,1'), or 'auto' (all GPUs, "
            "else one device)."
        ),
    )
    precision: str = Field(
        default="32-true",
        description=(
            "Lightning precision of the trainable part: 32-true, bf16-mixed, or 16-mixed (GPU)."
        ),
    )
    strategy: str = Field(
        default="auto",
        description=(
            "auto, or ddp for several devices. ddp runs as Lightning's spawn launcher so that it "
            "works inside a Dagster run."
        ),
    )
    num_nodes: int = Field(default=1, description="Machines taking part (multi-node DDP).")
