"""Feature extraction against the forward ceiling: the pipeline's frozen-feature cache
(bcc_pipeline.ml.features.extract_features) over a training_job's own tensors, against the
backbone's reduced-precision forward pass on input already on the device.

(i)  ceiling: the backbone with its head removed, weights and input in the inference dtype
     (bfloat16 on a recent GPU), torch.inference_mode, batch --ceiling-batch, after warm-up,
     timed between device synchronisations;
(ii) pipeline: extract_features, as the feature cache calls it (an inference_copy of the
     network, the same views: train and its mirror in one pass, val; the pipeline's default
     feature batch), over the memory-mapped uint8 tensors a training_job wrote, after a
     warm-up batch. Views are counted as images.

Target (issue 10): (ii) >= 70% of (i), judged on a CUDA GPU only. Exit status 1 when missed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import (
    calls_per_second,
    markdown_table,
    print_header,
    report_targets,
    share_of_ceiling,
    write_result,
)

TARGET_RATIO = 0.70


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=Path, required=True, help="a preprocessed_tensors folder")
    parser.add_argument("--backbone", default="vit_b_16")
    parser.add_argument("--accelerator", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--ceiling-batch", type=int, default=256, help="batch of the ceiling")
    parser.add_argument(
        "--feature-batch",
        type=int,
        default=None,
        help="batch of extract_features (default: the pipeline's for the device)",
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed ceiling batches")
    parser.add_argument("--iterations", type=int, default=20, help="timed ceiling batches")
    parser.add_argument("--result-json", type=Path, default=None, help="write the numbers here")
    return parser


def ceiling_images_per_second(frozen: Any, args: argparse.Namespace, image_size: int) -> float:
    """Images/s of the frozen backbone alone, input normalised and already on the device."""
    import torch

    device = frozen.mean.device
    inputs = torch.randn(
        args.ceiling_batch, 3, image_size, image_size, device=device, dtype=frozen.dtype
    )
    with torch.inference_mode():
        rate = calls_per_second(
            lambda: frozen.backbone(inputs), device, args.warmup, args.iterations
        )
    return rate * args.ceiling_batch


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from bcc_pipeline.data.tensors import TensorSplits
    from bcc_pipeline.ml.datamodule import TRAINING_SPLITS
    from bcc_pipeline.ml.devices import TrainerDevice
    from bcc_pipeline.ml.features import extract_features, view_files
    from bcc_pipeline.ml.network import build_network, inference_batch_size, inference_copy
    from bcc_pipeline.ml.settings import DeviceSettings

    parser = build_parser()
    args = parser.parse_args(argv)
    device = TrainerDevice.resolve(DeviceSettings(accelerator=args.accelerator))
    tensors = TensorSplits.open(args.tensors)
    net = build_network(len(tensors.class_names), tensors.image_size, args.backbone, "none", 0)
    args.feature_batch = args.feature_batch or inference_batch_size(net, device.torch_device)
    print_header("gpu_features: extract_features vs the forward ceiling", parser, args)
    frozen = inference_copy(net, device.torch_device, device.inference_dtype)
    print(f"{args.backbone} on {device.torch_device}, {device.inference_dtype}.\n", flush=True)

    ceiling = ceiling_images_per_second(frozen, args, tensors.image_size)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-features-") as scratch:
        warm = tensors.images("train")[: args.feature_batch]
        extract_features(frozen, warm, {Path(scratch) / "warm.npy": False}, args.feature_batch)
        for split in TRAINING_SPLITS:
            files = view_files(Path(scratch), split, horizontal_flip=True)  # as the cache does
            views = len(files)
            images = tensors.images(split)
            start = time.perf_counter()
            extract_features(frozen, images, files, args.feature_batch)
            seconds = time.perf_counter() - start  # written to the host file: synchronised
            for file in files:
                if not np.isfinite(np.load(file).astype(np.float32)).all():
                    raise SystemExit(f"non-finite features in {file.name}")
            name = f"{split}, {views} view{'s' if views > 1 else ''}"
            rows.append({"source": name, "images": views * len(images), "seconds": seconds})
    images = sum(row["images"] for row in rows)
    seconds = sum(row["seconds"] for row in rows)
    pipeline = images / seconds
    ratio = pipeline / ceiling
    print("## Results (measured)\n")
    print(
        markdown_table(
            [
                {
                    "measurement": f"(i) ceiling: backbone forward, batch {args.ceiling_batch}",
                    "images": args.iterations * args.ceiling_batch,
                    "seconds": args.iterations * args.ceiling_batch / ceiling,
                    "images/s": ceiling,
                },
                *(
                    {
                        "measurement": f"(ii) extract_features: {row['source']}",
                        **row,
                        "images/s": row["images"] / row["seconds"],
                    }
                    for row in rows
                ),
                {
                    "measurement": f"(ii) extract_features, all, batch {args.feature_batch}",
                    "images": images,
                    "seconds": seconds,
                    "images/s": pipeline,
                },
            ]
        )
    )
    write_result(
        args.result_json,
        {
            "ceiling_images_per_second": ceiling,
            "pipeline_images_per_second": pipeline,
            "ratio": ratio,
            "dtype": str(device.inference_dtype),
            "images": images,
        },
    )
    return report_targets(
        [
            share_of_ceiling(
                "extract_features / forward ceiling",
                pipeline,
                ceiling,
                TARGET_RATIO,
                judged=device.accelerator == "gpu",
            )
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
