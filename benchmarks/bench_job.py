"""One training_job run through `dagster job execute`, timed step by step from the Dagster
instance.

Runs `python -m dagster job execute -m bcc_pipeline.definitions -j training_job` in a child
process with a fresh DAGSTER_HOME, on the seed recipe by default (vit_b_16 with random weights,
head only, batch 16, 10 epochs, patience 3, 70/20/10 split, 224 px). Reports the process's wall
time and peak RSS, each step's seconds (the instance's step stats), the pipeline's own work
(first step's start to last step's end), the time before the first step (interpreter, imports,
code location, run launch) and after the last, and what the assets recorded (feature cache and
head training seconds, test accuracy).

No target of its own: bench_training.py (CPU) and gpu_check.py (GPU) judge these numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench_common import (
    GIB,
    add_generated_dataset_flags,
    ensure_generated_dataset,
    markdown_table,
    print_header,
    read_training_job,
    run_training_job,
    training_job_config,
    write_result,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_generated_dataset_flags(parser, Path("/tmp/bcc-bench/training/data_40x3_512px"))
    parser.add_argument("--image-size", type=int, default=224, help="preprocessed_tensors side")
    parser.add_argument("--backbone", default="vit_b_16", help="vit_checkpoint backbone")
    parser.add_argument("--trainable-blocks", type=int, default=0, help="0: head only")
    parser.add_argument("--epochs", type=int, default=10, help="max_epochs")
    parser.add_argument("--patience", type=int, default=3, help="early_stopping_patience")
    parser.add_argument("--batch-size", type=int, default=16, help="batch_size")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--precision", default="32-true", help="the accelerator's precision")
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/bcc-bench/job"), help="run folder (emptied)"
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="kill the run after this many seconds"
    )
    parser.add_argument("--result-json", type=Path, default=None, help="write the numbers here")
    return parser


def print_report(result: dict[str, Any]) -> None:
    steps = result["steps"]
    trained = result["metadata"]["vit_checkpoint"]
    print("\n## Steps (Dagster step stats)\n")
    print(markdown_table([{"step": key, "seconds": seconds} for key, seconds in steps.items()]))
    print("\n## Results (measured)\n")
    rows = [
        (
            "process start to first step (interpreter, imports, code location, launch)",
            result["before_first_step_seconds"],
        ),
        (
            "the pipeline's own work: first step's start to last step's end",
            result["own_work_seconds"],
        ),
        ("last step's end to process exit", result["after_last_step_seconds"]),
        ("whole `dagster job execute`, wall", result["wall_seconds"]),
        ("vit_checkpoint: feature cache", trained.get("feature_cache_seconds", float("nan"))),
        ("vit_checkpoint: trainer.fit", trained.get("train_seconds", float("nan"))),
    ]
    print(markdown_table([{"part": part, "seconds": float(s)} for part, s in rows]))
    n = result["counts"]
    print(
        f"\nSplit {n['train']}/{n['val']}/{n['test']}; {trained.get('epochs_run')} epochs run; "
        f"feature cache used: {trained.get('used_feature_cache')}; device "
        f"{trained.get('device')}; test accuracy "
        f"{result['metadata']['test_metrics_report']['accuracy']:.3f} (best val_loss epoch); "
        f"peak RSS {result['max_rss_bytes'] / GIB:.2f} GiB (largest process), "
        f"{result['tree_peak_bytes'] / GIB:.2f} GiB (whole tree, sampled); run "
        f"{result['run_id']}."
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.data, args.work = args.data.expanduser().resolve(), args.work.expanduser().resolve()
    print_header("bench_job: training_job through the Dagster CLI", parser, args)
    data, _ = ensure_generated_dataset(args)
    config = training_job_config(
        data,
        args.work / "artifacts",
        backbone=args.backbone,
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        image_size=args.image_size,
        trainable_blocks=args.trainable_blocks,
        accelerator=args.accelerator,
        precision=args.precision,
    )
    run, home = run_training_job(config, args.work, timeout=args.timeout)
    if run.timed_out or run.returncode != 0:
        print(run.tail())
        why = "timed out" if run.timed_out else f"failed (exit {run.returncode})"
        print(f"training_job {why} after {run.wall_seconds:.1f}s; log: {run.log}")
        return 1
    result = read_training_job(home, run)
    print_report(result)
    write_result(args.result_json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
