"""Turn accelerator settings into Trainer arguments, failing early and plainly on absent devices."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from bcc_pipeline.errors import ConfigError
from bcc_pipeline.ml.settings import DeviceSettings
from bcc_pipeline.quiet import LIGHTNING_BANNER, quieter

ACCELERATORS = ("auto", "cpu", "gpu", "mps")
PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true")


class DeviceConfigError(ConfigError):
    """Asked for a device, count or precision this machine cannot give."""


def cpu_has_fast_bfloat16() -> bool:
    """Whether oneDNN runs bfloat16 matrix work natively here (AVX512-BF16, AMX, or Arm's
    BF16); elsewhere bfloat16 is emulated and slower than float32."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def available_devices() -> str:
    """What this machine offers, in words, for error messages and run metadata."""
    found = [f"cpu ({os.cpu_count()} cores)"]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        found.append(f"gpu x{len(names)} ({', '.join(names)})")
    if torch.backends.mps.is_available():
        found.append("mps")
    return ", ".join(found)


def parse_devices(devices: object) -> int | list[int] | str:
    """Lightning's forms: a count (2 or "2"), GPU ids ([0, 1] or "0,1"), or "auto"."""
    usage = "a count such as 2, GPU ids such as [0, 1] or '0,1', or 'auto'"
    if isinstance(devices, str):
        text = devices.strip().strip("[]")
        if text == "auto":
            return "auto"
        parts = [part.strip() for part in text.split(",") if part.strip()]
        devices = [_device_number(part, usage) for part in parts] if "," in text else text
    if isinstance(devices, (list, tuple)):
        ids = [_device_number(item, usage) for item in devices]
        if not ids or len(set(ids)) != len(ids) or min(ids) < 0:
            raise DeviceConfigError(
                f"devices lists GPU ids, each once and from 0; got {devices!r}", "devices"
            )
        return ids
    count = _device_number(devices, usage)
    if count < 1:
        raise DeviceConfigError(f"devices must be at least 1; got {count}", "devices")
    return count


def _device_number(value: object, usage: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DeviceConfigError(f"devices must be {usage}; got {value!r}", "devices")
    try:
        return int(value)
    except ValueError as err:
        raise DeviceConfigError(f"devices must be {usage}; got {value!r}", "devices") from err


@dataclass(frozen=True)
class TrainerDevice:
    """Validated device settings: what the Trainer gets and where frozen features are computed."""

    accelerator: str
    devices: int | list[int]
    precision: str
    strategy: str
    num_nodes: int

    @classmethod
    def resolve(cls, settings: DeviceSettings) -> TrainerDevice:
        """The settings checked against this machine; `auto` made concrete."""
        accelerator, devices, precision = settings.accelerator, settings.devices, settings.precision
        num_nodes = settings.num_nodes
        gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if accelerator == "auto":
            if gpu_count:
                accelerator = "gpu"
            elif torch.backends.mps.is_available():
                accelerator = "mps"
            else:
                accelerator = "cpu"
        if accelerator == "gpu" and not gpu_count:
            raise DeviceConfigError(
                f"accelerator 'gpu' was asked for, but no CUDA GPU is visible. "
                f"Available: {available_devices()}. Use accelerator: cpu or auto.",
                "accelerator",
            )
        if accelerator == "mps" and not torch.backends.mps.is_available():
            raise DeviceConfigError(
                f"accelerator 'mps' was asked for, but Apple MPS is not available here. "
                f"Available: {available_devices()}. Use accelerator: cpu or auto.",
                "accelerator",
            )
        if accelerator not in ACCELERATORS:
            raise DeviceConfigError(
                f"accelerator must be one of {', '.join(ACCELERATORS)}; got {accelerator!r}",
                "accelerator",
            )
        if precision not in PRECISIONS:
            raise DeviceConfigError(
                f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}", "precision"
            )
        if num_nodes < 1:
            raise DeviceConfigError(f"num_nodes must be at least 1; got {num_nodes}", "num_nodes")
        if accelerator == "cpu" and precision == "16-mixed":
            raise DeviceConfigError(
                "precision 16-mixed needs a GPU; on the CPU use bf16-mixed", "precision"
            )

        parsed = parse_devices(devices)
        if parsed == "auto":
            parsed = gpu_count if accelerator == "gpu" else 1
        if accelerator == "gpu":
            wanted = parsed if isinstance(parsed, list) else list(range(parsed))
            missing = [i for i in wanted if i >= gpu_count]
            if missing:
                raise DeviceConfigError(
                    f"devices {devices!r} asks for GPU ids {wanted}, but only {gpu_count} "
                    f"GPU(s) are visible. Available: {available_devices()}.",
                    "devices",
                )
        elif isinstance(parsed, list):
            raise DeviceConfigError(
                f"a list of device ids needs accelerator gpu; got {devices!r}", "devices"
            )
        elif accelerator == "mps" and parsed > 1:
            raise DeviceConfigError("mps offers one device; set devices: 1", "devices")

        count = len(parsed) if isinstance(parsed, list) else parsed
        world_size = count * num_nodes
        return cls(
            accelerator=accelerator,
            devices=parsed,
            precision=precision,
            strategy=_launchable_strategy(settings.strategy.strip(), world_size),
            num_nodes=num_nodes,
        )

    @property
    def world_size(self) -> int:
        count = len(self.devices) if isinstance(self.devices, list) else self.devices
        return count * self.num_nodes

    @property
    def torch_device(self) -> torch.device:
        """The one device this process computes frozen features on."""
        if self.accelerator == "gpu":
            first = self.devices[0] if isinstance(self.devices, list) else 0
            return torch.device("cuda", first)
        return torch.device(self.accelerator)

    @property
    def inference_dtype(self) -> torch.dtype:
        """Reduced precision for the frozen backbone where the hardware supports it."""
        if self.accelerator == "gpu":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if self.accelerator == "mps":
            return torch.float16
        return torch.bfloat16 if cpu_has_fast_bfloat16() else torch.float32

    def check_with_lightning(self) -> None:
        """Lightning's own verdict on the strategy with these settings on this machine, which
        resolve does not repeat: a strategy it does not know, one that needs a GPU (fsdp) or
        a package (deepspeed). Training builds its Trainer only after the frozen features are
        cached, minutes into a run on a CPU; this builds one with the same device arguments at
        launch and drops it (no process starts, no torch flag changes)."""
        import pytorch_lightning as pl

        try:
            with quieter(LIGHTNING_BANNER):
                pl.Trainer(
                    **self.trainer_kwargs(),
                    logger=False,
                    enable_checkpointing=False,
                    enable_progress_bar=False,
                    enable_model_summary=False,
                )
        except Exception as err:  # Lightning raises ValueError, MisconfigurationException, ...
            raise DeviceConfigError(
                f"Lightning cannot train with these settings here: {str(err).splitlines()[0]}",
                "strategy",
            ) from None

    def trainer_kwargs(self) -> dict:
        return {
            "accelerator": self.accelerator,
            "devices": self.devices,
            "precision": self.precision,
            "strategy": self.strategy,
            "num_nodes": self.num_nodes,
        }


def _launchable_strategy(strategy: str, world_size: int) -> str:
    """Lightning's plain ddp re-executes the command line, which a Dagster run cannot survive;
    a multi-node job is started by torchrun or a cluster, which sets the env Lightning reads."""
    if world_size > 1 and strategy in ("auto", "ddp") and "LOCAL_RANK" not in os.environ:
        return "ddp_spawn"
    return strategy
