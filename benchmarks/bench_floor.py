"""The floor of head-only training: one reduced-precision forward pass of the backbone over
every view the feature cache needs, and nothing else.

A head-only recipe must run the frozen backbone at least once per image and view (the image
and its mirror for training, so that a random flip stays a fair coin; val once; the test split
is the report's, not training's). This
script times exactly that on random uint8 input already in memory: normalisation plus the
backbone (its head removed), torch.inference_mode, weights and input in bfloat16 where the CPU
supports it (else float32), in batches of the pipeline's size for a CPU (inference_batch_size,
the fastest measured), after an untimed warm-up batch (oneDNN sets its kernels up on first
use; printed separately). The view count comes from the pipeline's own split of a dataset of
--per-class images per class.

No target of its own: bench_training.py compares the vit_checkpoint step with it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench_common import (
    cached_views,
    markdown_table,
    print_header,
    split_counts,
    write_result,
)

from bcc_pipeline.sample_data import CLASS_FOLDERS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=40, help="dataset images per class")
    parser.add_argument("--copies", type=int, default=0, help="'- Copy.jpg' files in the dataset")
    parser.add_argument("--backbone", default="vit_b_16", help="vit_b_16, or vit_tiny to check")
    parser.add_argument("--image-size", type=int, default=224, help="input side")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="forward batch (default: the pipeline's on a CPU, inference_batch_size)",
    )
    parser.add_argument("--result-json", type=Path, default=None, help="write the numbers here")
    return parser


def forward_seconds(
    backbone: str, views: int, image_size: int, batch_size: int, dtype: Any
) -> tuple[float, float]:
    """(seconds for `views` images, seconds of the untimed warm-up batch of 8). Random input
    is drawn outside the timed region; the normalisation is inside, as in the pipeline."""
    import torch

    from bcc_pipeline.ml.backbones import load_backbone, replace_head

    model, norm = load_backbone(backbone, "none", image_size)
    model, _ = replace_head(model, len(CLASS_FOLDERS))  # model(x): the features a head reads
    model.eval().to(dtype)
    mean = torch.tensor(norm.mean).view(1, -1, 1, 1)
    std = torch.tensor(norm.std).view(1, -1, 1, 1)
    generator = torch.Generator().manual_seed(0)

    def batch(count: int) -> torch.Tensor:
        shape = (count, 3, image_size, image_size)
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)

    total = 0.0
    with torch.inference_mode():
        pixels = batch(min(8, views))
        began = time.perf_counter()
        model(((pixels.float() / 255 - mean) / std).to(dtype))
        warmup = time.perf_counter() - began
        for start in range(0, views, batch_size):
            pixels = batch(min(batch_size, views - start))
            began = time.perf_counter()
            model(((pixels.float() / 255 - mean) / std).to(dtype)).float()
            total += time.perf_counter() - began
    return total, warmup


def main(argv: list[str] | None = None) -> int:
    import torch

    from bcc_pipeline.ml.network import build_network, inference_batch_size

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size is None:
        shape_only = build_network(
            len(CLASS_FOLDERS), args.image_size, args.backbone, "none", 0, empty=True
        )
        args.batch_size = inference_batch_size(shape_only, torch.device("cpu"))
    print_header("bench_floor: the backbone's forward pass over every cached view", parser, args)
    counts = split_counts(dict.fromkeys(CLASS_FOLDERS, args.per_class), args.copies)
    views = cached_views(counts)
    dtype = torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32
    print(
        f"The pipeline's split of {args.per_class} x {len(CLASS_FOLDERS)} images (+{args.copies} "
        f"copies): {counts['train']}/{counts['val']}/{counts['test']}, so {views} views "
        f"(2 x train + val). {args.backbone}, {dtype}, batch {args.batch_size}.\n",
        flush=True,
    )
    seconds, warmup = forward_seconds(args.backbone, views, args.image_size, args.batch_size, dtype)
    print("## Results (measured)\n")
    print(
        markdown_table(
            [
                {
                    "measurement": f"{args.backbone} {dtype} forward over every view",
                    "views": views,
                    "seconds": seconds,
                    "ms per view": 1000 * seconds / views,
                    "first-call warm-up s (8 images, not included)": warmup,
                }
            ]
        )
    )
    write_result(
        args.result_json,
        {
            "counts": counts,
            "views": views,
            "dtype": str(dtype),
            "seconds": seconds,
            "warmup_seconds": warmup,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
