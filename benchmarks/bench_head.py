"""Head training at the full dataset's size: the pipeline's fit_classifier on cached features
of the real shapes, against a plain PyTorch loop doing the same Adam steps.

On cached features an epoch costs mostly per-step overhead, which a 120-image run cannot show.
This runs the real fit_classifier (its Trainer, data module, manual optimisation in chunks,
early stopping, checkpointing, and the single torch thread it chooses itself for head-only
training) with the feature cache replaced by random float16 features, so that no image is
decoded or forwarded; the split sizes are those the pipeline's own split gives the Kaggle
layout (2004 + 2004 + 2004 images plus 44 byte-identical copies). The plain loop is the
recipe's arithmetic and nothing else (batch 16, Adam 1e-4, a coin per image per epoch between
the two views, a val pass), on one thread like the pipeline.

No target of its own: it shows what the Lightning path costs per epoch over the bare math.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

from bench_common import (
    KAGGLE_COPIES,
    KAGGLE_ORIGINALS,
    SPLIT_SEED,
    markdown_table,
    print_header,
    split_counts,
    write_result,
)

from bcc_pipeline.sample_data import CLASS_FOLDERS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vit_b_16", help="sets the feature width")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each variant")
    parser.add_argument("--batch-size", type=int, default=16, help="optimizer batch")
    parser.add_argument(
        "--accelerator", default="cpu", choices=("cpu", "gpu"), help="where both variants train"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/bcc-bench/head"))
    parser.add_argument("--result-json", type=Path, default=None, help="write the numbers here")
    return parser


def random_features(counts: dict[str, int], width: int) -> dict[str, Any]:
    """Split name -> SplitViews of float16 features: two views for train, one for val, test."""
    import numpy as np

    from bcc_pipeline.ml.datamodule import SplitViews

    rng = np.random.default_rng(0)

    def views(count: int, number: int) -> SplitViews:
        arrays = [rng.standard_normal((count, width), dtype=np.float32) for _ in range(number)]
        labels = rng.integers(0, len(CLASS_FOLDERS), count)
        return SplitViews([a.astype(np.float16) for a in arrays], labels)

    return {
        "train": views(counts["train"], 2),
        "val": views(counts["val"], 1),
        "test": views(counts["test"], 1),
    }


def pipeline_epoch_seconds(args: argparse.Namespace, features: dict[str, Any]) -> float:
    """trainer.fit seconds per epoch of fit_classifier, features handed in for the cache."""
    from bcc_pipeline.ml import training
    from bcc_pipeline.ml.devices import TrainerDevice
    from bcc_pipeline.ml.settings import DeviceSettings, TrainingSettings

    class FeatureOnlyTensors:
        """What fit_classifier reads of a TensorSplits when it trains on the cache."""

        class_names = list(CLASS_FOLDERS)
        image_size = 224
        fingerprint = "random-features"

    settings = TrainingSettings(
        backbone=args.backbone,
        weights="none",
        max_epochs=args.epochs,
        early_stopping_patience=args.epochs,  # every epoch runs, whatever val_loss does
        batch_size=args.batch_size,
        seed=SPLIT_SEED,
    )
    args.work.mkdir(parents=True, exist_ok=True)
    with (
        mock.patch.object(training, "cached_feature_splits", return_value=(features, False)),
        tempfile.TemporaryDirectory(prefix="bench-head-", dir=args.work) as tmp,
    ):
        result = training.fit_classifier(
            FeatureOnlyTensors(),  # type: ignore[arg-type]
            settings,
            TrainerDevice.resolve(DeviceSettings(accelerator=args.accelerator)),
            Path(tmp),
            log=lambda _: None,
        )
    if not result.used_feature_cache or result.epochs_run != args.epochs:
        raise RuntimeError(f"expected {args.epochs} epochs on the cache; got {result}")
    return result.train_seconds / result.epochs_run


def plain_epoch_seconds(
    args: argparse.Namespace, features: dict[str, Any], fused: bool = False
) -> float:
    """The same Adam steps in a bare loop, features resident on the device: seconds per epoch
    (train and val)."""
    import torch
    import torch.nn.functional as F

    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")

    def tensors(split: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        views = [torch.from_numpy(v).to(device) for v in features[split].views]
        return views, torch.from_numpy(features[split].labels).long().to(device)

    (train_a, train_b), train_y = tensors("train")
    (val_x,), val_y = tensors("val")
    head = torch.nn.Linear(train_a.shape[1], len(CLASS_FOLDERS), device=device)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-4, fused=fused or None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        for _ in range(args.epochs):
            order = torch.randperm(len(train_y), device=device)
            for rows in order.split(args.batch_size):
                mirror = torch.rand(len(rows), device=device) < 0.5
                x = torch.where(mirror[:, None], train_b[rows], train_a[rows]).float()
                loss = F.cross_entropy(head(x), train_y[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                F.cross_entropy(head(val_x.float()), val_y).item()
        return (time.perf_counter() - start) / args.epochs
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.work = args.work.expanduser().resolve()
    print_header("bench_head: head training at full size on cached features", parser, args)
    from bcc_pipeline.ml.network import build_network

    counts = split_counts(KAGGLE_ORIGINALS, KAGGLE_COPIES)
    width = build_network(len(CLASS_FOLDERS), 224, args.backbone, "none", 0).head.in_features
    features = random_features(counts, width)
    print(
        f"The pipeline's split of the Kaggle layout: {counts['train']}/{counts['val']}/"
        f"{counts['test']}; {width}-wide float16 features, 2 views per training image; "
        f"batch {args.batch_size}; {args.epochs} epochs each.\n",
        flush=True,
    )
    if args.accelerator == "gpu":  # the CUDA context and cuBLAS start outside both timings
        import torch

        torch.ones(8, 8, device="cuda").matmul(torch.ones(8, 8, device="cuda")).sum().item()
    pipeline = pipeline_epoch_seconds(args, features)
    plain = plain_epoch_seconds(args, features)
    fused = plain_epoch_seconds(args, features, fused=True)
    on = args.accelerator
    variants = {
        f"fit_classifier's trainer.fit on {on} (fused Adam; 1 torch thread, its choice)": pipeline,
        f"plain PyTorch loop on {on}, the same steps, torch's default Adam": plain,
        f"plain PyTorch loop on {on}, the same steps, fused Adam": fused,
    }
    steps = -(-counts["train"] // args.batch_size)
    print("## Results (measured)\n")
    print(
        markdown_table(
            [
                {
                    "variant": name,
                    "s per epoch": seconds,
                    "ms per optimizer step": 1000 * seconds / steps,
                    "train images/s": counts["train"] / seconds,
                }
                for name, seconds in variants.items()
            ]
        )
    )
    print(
        f"\nfit_classifier / plain loop with the same (fused) Adam: {pipeline / fused:.2f}x per "
        f"epoch ({steps} steps)."
    )
    write_result(
        args.result_json,
        {
            "counts": counts,
            "pipeline_epoch_seconds": pipeline,
            "plain_epoch_seconds": plain,
            "plain_fused_epoch_seconds": fused,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
