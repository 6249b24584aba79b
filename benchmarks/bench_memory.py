"""Benchmark the peak memory of the whole training_job on the Kaggle-sized dataset.

Runs `dagster job execute -j training_job` in a child process on 6056 synthetic 512x512
JPEGs (the cache of bench_manifest.py; generated if absent): tensors at 224 px, vit_b_16 with
random weights, head only, the frozen-prefix feature cache on, 1 epoch by default. Reports
the child's ru_maxrss (os.wait4: the largest single process of the run; the job runs its
steps in one process by default) and a sampled peak of the whole process tree.

Why: the pipeline must fit an ordinary 8 GB laptop or CI runner with room to spare
(target: under 4 GiB). RSS counts the resident pages of memory-mapped files too (the uint8
tensors, spilled feature caches); those are page cache the kernel can reclaim, so this is an
upper bound on what the run needs. Exit status 1 when the target is missed at the full size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench_common import (
    GIB,
    KAGGLE_TOTAL,
    Target,
    add_dataset_flags,
    ensure_dataset,
    load_average,
    markdown_table,
    print_header,
    read_training_job,
    report_targets,
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
    run, home = run_training_job(config, run_dir)
    if run.returncode != 0:
        print(run.tail())
        print(f"training_job failed (exit {run.returncode}); log: {run.log}")
        return 1
    result = read_training_job(home, run)
    trained = result["metadata"]["vit_checkpoint"]
    tensor_mib = result["metadata"]["preprocessed_tensors"]["total_MiB"]
    images = sum(result["counts"].values())
    print(
        f"    done in {run.wall_seconds:.1f}s: split {result['counts']}, "
        f"{trained['epochs_run']} epochs run, feature cache used: "
        f"{trained['used_feature_cache']} ({trained['feature_cache_seconds']}s), tensors "
        f"{tensor_mib:.0f} MiB on disk, memory-mapped."
    )
    print(f"Load average after: {load_average()}\n")
    print("## Results (measured)\n")
    print(
        markdown_table(
            [
                {
                    "images": images,
                    "image_size": args.image_size,
                    "epochs": trained["epochs_run"],
                    "backbone": args.backbone,
                    "peak RSS GiB (largest process)": run.max_rss_bytes / GIB,
                    "peak RSS GiB (whole tree, sampled)": run.tree_peak_bytes / GIB,
                    "wall seconds": run.wall_seconds,
                }
            ]
        )
    )
    worst = max(run.max_rss_bytes, run.tree_peak_bytes) / GIB
    documented = images == KAGGLE_TOTAL and args.image_size == 224 and args.backbone == "vit_b_16"
    return report_targets(
        [
            Target(
                f"peak RSS of training_job, {KAGGLE_TOTAL} images at 224 px",
                f"{worst:.2f} GiB (the larger column) on {images} images",
                f"< {TARGET_GIB:.0f} GiB",
                worst < TARGET_GIB if documented else None,
            )
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
