"""Benchmark the peak memory of the whole training_job on the Kaggle-sized dataset.

Runs `dagster job execute -j training_job` in a child process on 6056 synthetic 512x512
JPEGs (the cache of bench_manifest.py; generated if absent): tensors at 224 px, vit_b_16 with
random weights, head only, the frozen-prefix feature cache on, 1 epoch by default. Reports
the child's ru_maxrss (os.wait4: the largest single process of the run; Dagster runs each
step in its own process) and a sampled peak of the whole process tree.

Why: the pipeline must fit an ordinary 8 GB laptop or CI runner with room to spare
(target: under 4 GiB). RSS counts the resident pages of memory-mapped files too (the uint8
tensors, spilled feature caches); those are page cache the kernel can reclaim, so this is an
upper bound on what the run needs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench_common import (
    GIB,
    KAGGLE_TOTAL,
    add_dataset_flags,
    ensure_dataset,
    markdown_table,
    print_header,
    read_training_job,
    run_training_job,
    scaled_counts,
    training_job_config,
)

TARGET_GIB = 4.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_flags(
        parser, "dataset cache folder (bench_manifest.py's): reused, or generated when absent"
    )
    parser.add_argument("--epochs", type=int, default=1, help="max_epochs of vit_checkpoint")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch")
    parser.add_argument(
        "--backbone",
        default="vit_b_16",
        choices=["vit_b_16", "vit_tiny"],
        help="vit_b_16 (the recipe); vit_tiny only for quick checks of this script",
    )
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/bcc-bench/memory"), help="run folder (emptied)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    print_header("bench_memory: peak RSS of the whole training_job", parser, args)
    if args.backbone != "vit_b_16":
        print(f"NOTE: backbone {args.backbone}: a quick check of this script, not the benchmark.")
    data, _ = ensure_dataset(args.data, scaled_counts(args.images), args.size)
    run_dir = args.work.expanduser().resolve() / "run"
    config = training_job_config(
        data,
        run_dir / "artifacts",
        backbone=args.backbone,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
    )
    print("training_job:", flush=True)
    run, home, artifacts = run_training_job(config, run_dir)
    result = read_training_job(home, artifacts)
    metrics = result["metrics"]
    images = sum(result["counts"].values())
    print(
        f"    done in {run.wall_seconds:.1f}s: split {result['counts']}, "
        f"{metrics['epochs_run']} epochs run, feature cache used: "
        f"{metrics['used_feature_cache']} ({metrics['feature_cache_seconds']}s), tensors "
        f"{result['tensor_mib']:.0f} MiB on disk, memory-mapped."
    )
    print(f"Load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("## Results (measured)\n")
    print(
        markdown_table(
            [
                {
                    "images": images,
                    "image_size": args.image_size,
                    "epochs": metrics["epochs_run"],
                    "backbone": args.backbone,
                    "peak RSS GiB (largest process)": run.max_rss_bytes / GIB,
                    "peak RSS GiB (whole tree, sampled)": run.tree_peak_bytes / GIB,
                    "wall seconds": run.wall_seconds,
                }
            ]
        )
    )
    print()
    worst = max(run.max_rss_bytes, run.tree_peak_bytes) / GIB
    verdict = "met" if worst < TARGET_GIB else "MISSED"
    print(
        f"Target: peak RSS under {TARGET_GIB:.0f} GiB for {KAGGLE_TOTAL} images at 224 px. "
        f"Measured here: {worst:.2f} GiB (the larger of the two columns) on {images} images"
        + (
            f": {verdict}."
            if images == KAGGLE_TOTAL and args.image_size == 224
            else ", not the target size: no verdict."
        )  # fmt: skip
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
