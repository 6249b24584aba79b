"""GPU check: the pipeline's frozen-feature extraction against the vit_b_16 bf16 ceiling.

(i)  ceiling: vit_b_16 forward, input already on the GPU, torch.inference_mode, weights
     and input in bfloat16, batch 256, after warm-up, timed between CUDA synchronisations;
(ii) pipeline: 2000 generated images written as uint8 tensors by the real code path
     (generate_sample_dataset at 256 px, scan_folder, stratified_group_split,
     write_tensor_splits at 224), then bcc_pipeline.ml.features.extract_features, the function
     the feature cache calls, with BrainMRIClassifier(vit_b_16, weights none, head only) on
     TrainerDevice.resolve("gpu")'s device and dtype, batch 256, over every split's memmap
     (plus the train split's mirror view, which the cache also extracts).

Why: on a GPU the feature cache should be bound by the GPU, not by host-side batching and
copies (target: pipeline >= 70% of the ceiling). Run through gpu_check.sh (under 5 minutes
on an H100/H200). Exits with status 2 and a plain message where no CUDA device is visible.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import (
    ensure_dataset,
    markdown_table,
    print_header,
    scaled_counts,
)

TARGET_RATIO = 0.70


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="generated images in all")
    parser.add_argument("--size", type=int, default=256, help="side of the generated JPEGs")
    parser.add_argument("--image-size", type=int, default=224, help="tensor side")
    parser.add_argument("--batch-size", type=int, default=256, help="forward batch, both parts")
    parser.add_argument("--warmup", type=int, default=5, help="untimed ceiling batches")
    parser.add_argument("--iterations", type=int, default=20, help="timed ceiling batches")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "bcc-gpu-check",
        help="generated images and tensors (images reused when present)",
    )
    return parser


def require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda or "none (a CPU-only build)"
        print(
            "gpu_check: no CUDA device is visible, so there is nothing to measure. "
            f"torch {torch.__version__}, built for CUDA {built}; torch.cuda.device_count() = "
            f"{torch.cuda.device_count()}. Run this on a machine with an NVIDIA GPU and a CUDA "
            "build of torch (check `nvidia-smi` and CUDA_VISIBLE_DEVICES).",
            file=sys.stderr,
        )
        raise SystemExit(2)


def ceiling_images_per_second(model: Any, device: Any, args: argparse.Namespace) -> float:
    """vit_b_16 bf16 forward throughput (weights and input in bf16, the input already on the
    device): the best this card does, whatever the pipeline around it."""
    import torch

    model = model.to(device=device, dtype=torch.bfloat16).eval()
    pixels = torch.randn(
        args.batch_size, 3, args.image_size, args.image_size, device=device, dtype=torch.bfloat16
    )
    with torch.inference_mode():
        for _ in range(args.warmup):
            model(pixels)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.iterations):
            model(pixels)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return args.iterations * args.batch_size / seconds


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    require_cuda()
    import numpy as np
    import torch

    from bcc_pipeline.data.manifest import require_usable, scan_folder
    from bcc_pipeline.data.split import split_fingerprint, stratified_group_split
    from bcc_pipeline.data.tensors import TensorSplits, write_tensor_splits
    from bcc_pipeline.ml.datamodule import MirroredView
    from bcc_pipeline.ml.devices import TrainerDevice
    from bcc_pipeline.ml.features import extract_features
    from bcc_pipeline.ml.module import BrainMRIClassifier

    print_header("gpu_check: feature extraction vs the bf16 forward ceiling", parser, args)
    gpu = torch.cuda.get_device_name()
    print(f"GPU: {gpu}; bf16 supported: {torch.cuda.is_bf16_supported()}\n", flush=True)

    work = args.work.expanduser().resolve()
    start = time.perf_counter()
    data, _ = ensure_dataset(work / "data", scaled_counts(args.images), args.size)
    manifest = scan_folder(data)
    require_usable(manifest, data)
    table = stratified_group_split(manifest, {"train": 0.7, "val": 0.2, "test": 0.1}, 42).table
    tensor_dir = Path(tempfile.mkdtemp(prefix="tensors-", dir=work))
    write_tensor_splits(table, data, tensor_dir, args.image_size, split_fingerprint(table))
    tensors = TensorSplits.open(tensor_dir)
    print(f"Data ready in {time.perf_counter() - start:.1f}s: {len(table)} images.", flush=True)

    device = TrainerDevice.resolve("gpu")
    module = BrainMRIClassifier(
        class_names=tensors.class_names,
        image_size=args.image_size,
        backbone="vit_b_16",
        weights="none",
        trainable_blocks=0,
    )
    print(f"Device {device.torch_device}, inference dtype {device.inference_dtype}.", flush=True)

    # (i) the ceiling: the same network the cache runs (backbone with its head removed)
    backbone = copy.deepcopy(module.net.backbone)
    ceiling = ceiling_images_per_second(backbone, device.torch_device, args)
    print(f"(i) ceiling: {ceiling:.0f} images/s", flush=True)

    # (ii) the pipeline's extract_features over memory-mapped uint8 tensors
    warm = tensors.images("train")[: args.batch_size]
    extract_features(module, warm, device.torch_device, device.inference_dtype, args.batch_size)
    torch.cuda.synchronize()
    rows = []
    total_images, total_seconds = 0, 0.0
    sources = [(split, tensors.images(split)) for split in ("train", "val", "test")]
    sources.append(("train, mirror view", MirroredView(tensors.images("train"))))
    for name, images in sources:
        if len(images) == 0:
            continue
        begin = time.perf_counter()
        features = extract_features(
            module, images, device.torch_device, device.inference_dtype, args.batch_size
        )
        torch.cuda.synchronize()
        seconds = time.perf_counter() - begin
        if not np.isfinite(np.asarray(features, dtype=np.float32)).all():
            raise SystemExit(f"non-finite features from the {name} split")
        total_images += len(images)
        total_seconds += seconds
        rows.append(
            {
                "measurement": f"(ii) extract_features: {name}",
                "images": len(images),
                "seconds": seconds,
                "images/s": len(images) / seconds,
                "% of ceiling": 100 * len(images) / seconds / ceiling,
            }
        )
    pipeline = total_images / total_seconds
    ratio = pipeline / ceiling
    rows.insert(
        0,
        {
            "measurement": "(i) vit_b_16 bf16 forward ceiling (input on GPU)",
            "images": args.iterations * args.batch_size,
            "seconds": args.iterations * args.batch_size / ceiling,
            "images/s": ceiling,
            "% of ceiling": 100.0,
        },
    )
    rows.append(
        {
            "measurement": "(ii) extract_features: all of the above",
            "images": total_images,
            "seconds": total_seconds,
            "images/s": pipeline,
            "% of ceiling": 100 * ratio,
        }
    )
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    print(f"(ii) pipeline: {pipeline:.0f} images/s\n")
    print(f"## Results (measured) on {gpu}, batch {args.batch_size}, {device.inference_dtype}\n")
    print(markdown_table(rows))
    print(
        f"\nceiling {ceiling:.0f} images/s, pipeline {pipeline:.0f} images/s, ratio "
        f"{ratio:.2f} (target >= {TARGET_RATIO:.2f}: {verdict})."
    )
    return 0 if not math.isnan(ratio) else 1


if __name__ == "__main__":
    raise SystemExit(main())
