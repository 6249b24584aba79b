"""Issue 10's GPU benchmark in one short sitting (run it through gpu_check.sh): on one CUDA GPU,
the pipeline's training_job against the seed recipe on the full-size synthetic Kaggle layout,
and the pipeline's feature extraction and fine-tuning against the card's ceilings.

Stages, each in its own process under its own time limit (the limits add up to less than
--deadline, so a slow stage cannot eat the sitting; a stage that runs out is reported, not
waited for):

1. make_dataset.py: 6056 synthetic 512 px JPEGs (2004 per class plus 44 byte-identical
   '... - Copy.jpg' files in brain_tumor), drawn by every core;
2. bench_job.py: `dagster job execute -j training_job`, seed recipe (vit_b_16 head only,
   weights none, batch 16, 10 epochs), accelerator gpu; each step's seconds from the instance;
3. gpu_features.py: the bf16 forward ceiling and extract_features over the job's tensors;
4. gpu_finetune.py: the bf16 forward+backward ceiling and fit_classifier with
   trainable_blocks -1, bf16-mixed, batch 64, over the job's tensors;
5. bench_seed.py: the blog's recipe on the same images and card (7 loader workers, fp32);
6. bench_scaling.py: the manifest scan and the tensor decoding on 2 and on every core, over the
   same images (parallel efficiency; this project's CPU machine has only 2 cores).

Then one table of every number, and the targets (exit status 1 when one is missed or a stage
did not finish). Without a CUDA device it refuses with exit status 2, unless --cpu-smoke,
which runs every stage on the CPU at toy sizes to check the script itself (no verdicts).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_common import (
    Target,
    load_average,
    markdown_table,
    print_header,
    report_targets,
    run_script,
)
from bench_scaling import EFFICIENCY_TARGET
from gpu_features import TARGET_RATIO as FEATURES_TARGET
from gpu_finetune import TARGET_RATIO as FINETUNE_TARGET

STARTED = time.monotonic()
OWN_WORK_TARGET_S = 10.0
JOB_WALL_TARGET_S = 30.0
SEED_SPEEDUP_TARGET = 10.0
RESERVE_S = 10.0
"""Kept back from the deadline for the final table."""


@dataclass(frozen=True)
class Stage:
    name: str
    script: str
    budget_s: float
    """From issue 10's H100 numbers, with headroom (see benchmarks/README.md)."""


STAGES = (
    Stage("data", "make_dataset.py", 55),
    Stage("training_job", "bench_job.py", 100),
    Stage("features", "gpu_features.py", 40),
    Stage("finetune", "gpu_finetune.py", 70),
    Stage("seed", "bench_seed.py", 150),
    Stage("scaling", "bench_scaling.py", 60),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="check this script on the CPU at toy sizes (20 per class, 128 px, vit_tiny at "
        "64 px, 1 fine-tuning epoch); measures nothing worth reporting",
    )
    parser.add_argument(
        "--deadline", type=float, default=450, help="seconds for everything this script does"
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "bcc-gpu-check",
        help="images, runs and logs (the images are reused when present)",
    )
    parser.add_argument("--seed-workers", type=int, default=7, help="the recipe's loader workers")
    return parser


def require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda or "none (a CPU-only build)"
        print(
            "gpu_check: no CUDA device is visible, so there is nothing to measure. "
            f"torch {torch.__version__}, built for CUDA {built}; torch.cuda.device_count() = "
            f"{torch.cuda.device_count()}. Run this on a machine with an NVIDIA GPU and a CUDA "
            "build of torch (check `nvidia-smi` and CUDA_VISIBLE_DEVICES), or pass --cpu-smoke "
            "to check the script itself on the CPU.",
            file=sys.stderr,
        )
        raise SystemExit(2)


def stage_flags(args: argparse.Namespace, data: Path, job: dict[str, Any] | None) -> dict:
    """Each stage's command-line flags; the full-size setup, or toy sizes for --cpu-smoke."""
    smoke = args.cpu_smoke
    per_class, copies, size = (20, 2, 128) if smoke else (2004, 44, 512)
    backbone = "vit_tiny" if smoke else "vit_b_16"
    image_size = 64 if smoke else 224
    accelerator = "cpu" if smoke else "gpu"
    dataset = ["--data", str(data), "--per-class", str(per_class), "--copies", str(copies),
               "--size", str(size)]  # fmt: skip
    recipe = ["--backbone", backbone, "--image-size", str(image_size),
              "--accelerator", accelerator, "--epochs", "10", "--batch-size", "16"]  # fmt: skip
    tensors = ["--tensors", str(job["tensors_path"])] if job else []
    model = ["--backbone", backbone, "--accelerator", accelerator]
    if smoke:
        model += ["--warmup", "1", "--iterations", "2"]
    smoke_features = ["--ceiling-batch", "16"] if smoke else []
    smoke_finetune = ["--epochs", "1", "--batch-size", "8"] if smoke else []
    return {
        "data": [*dataset, "--workers", str(os.cpu_count() or 1)],
        "training_job": [*dataset, *recipe, "--work", str(args.work / "job")],
        "features": [*tensors, *model, *smoke_features],
        "finetune": [*tensors, *model, *smoke_finetune, "--work", str(args.work / "finetune")],
        "seed": [*dataset, *recipe, "--workers", str(args.seed_workers),
                 "--work", str(args.work / "seed")],
        "scaling": ["--data", str(data), "--low", "1" if smoke else "2",
                    "--high", str(os.cpu_count() or 1), "--work", str(args.work / "scaling")],
    }  # fmt: skip


def run_stages(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, float], list[str]]:
    """Every stage in order; (results by stage, wall seconds by stage, stages that failed)."""
    data = args.work / ("data-smoke" if args.cpu_smoke else "kaggle6056")
    results: dict[str, Any] = {}
    walls: dict[str, float] = {}
    failed: list[str] = []
    for stage in STAGES:
        needs_tensors = stage.name in ("features", "finetune")
        if needs_tensors and results.get("training_job") is None:
            print(f"\n{stage.name}: skipped (it needs the training_job's tensors)")
            failed.append(stage.name)
            continue
        if stage.name != "data" and results.get("data") is None:
            print(f"\n{stage.name}: skipped (no dataset)")
            failed.append(stage.name)
            continue
        left = args.deadline - (time.monotonic() - STARTED) - RESERVE_S
        limit = min(stage.budget_s, left)
        if limit <= 5:
            print(f"\n{stage.name}: skipped ({left:.0f}s left of the deadline)")
            failed.append(stage.name)
            continue
        print(f"\n{stage.name} (limit {limit:.0f}s):", flush=True)
        flags = stage_flags(args, data, results.get("training_job"))[stage.name]
        run, results[stage.name] = run_script(stage.script, flags, args.work, timeout=limit)
        walls[stage.name] = run.wall_seconds
        if results[stage.name] is None:
            failed.append(stage.name)
    return results, walls, failed


def numbers_table(results: dict[str, Any], walls: dict[str, float]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(stage: str, measurement: str, value: float, unit: str = "s") -> None:
        rows.append({"stage": stage, "measurement": measurement, "value": value, "unit": unit})

    for stage, seconds in walls.items():
        add(stage, "stage process, wall", seconds)
    if data := results.get("data"):
        add("data", f"generating {data['files']} JPEGs (0: reused)", data["seconds"])
    if job := results.get("training_job"):
        add("training_job", "process start to first step", job["before_first_step_seconds"])
        for step, seconds in job["steps"].items():
            add("training_job", f"step {step}", seconds)
        add(
            "training_job",
            "own work: first step's start to last step's end",
            job["own_work_seconds"],
        )
        add("training_job", "last step's end to process exit", job["after_last_step_seconds"])
        add("training_job", "whole `dagster job execute`", job["wall_seconds"])
        trained = job["metadata"]["vit_checkpoint"]
        add("training_job", "vit_checkpoint feature cache", trained["feature_cache_seconds"])
        add("training_job", "vit_checkpoint head training", trained["train_seconds"])
        add(
            "training_job",
            "test accuracy (best val_loss epoch)",
            job["metadata"]["test_metrics_report"]["accuracy"],
            "",
        )
    if features := results.get("features"):
        add("features", "bf16 forward ceiling", features["ceiling_images_per_second"], "images/s")
        add("features", "extract_features", features["pipeline_images_per_second"], "images/s")
    if finetune := results.get("finetune"):
        add(
            "finetune",
            "bf16 fwd+bwd+Adam ceiling, the same batch",
            finetune["ceiling_images_per_second"],
            "images/s",
        )
        add(
            "finetune",
            "fit_classifier trainable_blocks -1, bf16-mixed, validation included",
            finetune["pipeline_images_per_second"],
            "images/s",
        )
    if seed := results.get("seed"):
        add("seed", "imports, data, model, Trainer", seed["before_fit_seconds"])
        add("seed", "trainer.fit", seed["fit_seconds"])
        add("seed", "trainer.test", seed["test_seconds"])
        add("seed", "test accuracy (last epoch)", seed["test_accuracy"], "")
    if scaling := results.get("scaling"):
        for step, by in scaling["seconds"].items():
            for workers, seconds in by.items():
                add("scaling", f"{step}, {workers} processes", seconds)
    return rows


def targets(results: dict[str, Any]) -> list[Target]:
    """Issue 10's GPU-machine targets; one whose stage did not finish shows 'not run'."""
    job, seed, scaling = results.get("training_job"), results.get("seed"), results.get("scaling")

    def target(name: str, goal: str, measured: tuple[str, bool | None] | None) -> Target:
        text, met = measured or ("not run", None)
        return Target(name, text, goal, met)

    def seconds(value: float, limit: float) -> tuple[str, bool]:
        return f"{value:.1f} s", value <= limit

    def share(result: dict[str, Any] | None, goal: float) -> tuple[str, bool] | None:
        if not result:
            return None
        text = (
            f"{result['pipeline_images_per_second']:.0f} / "
            f"{result['ceiling_images_per_second']:.0f} images/s = {100 * result['ratio']:.0f}%"
        )
        return text, result["ratio"] >= goal

    def efficiency(step: str) -> tuple[str, bool | None] | None:
        if not scaling:
            return None
        share = scaling["efficiency"][step]
        text = f"{100 * share:.0f}% ({scaling['low']} to {scaling['high']} processes)"
        return text, (share >= EFFICIENCY_TARGET) if scaling["judged"] else None

    speedup = None
    if job and seed:
        seed_work = seed["fit_seconds"] + seed["test_seconds"]
        ratio = seed_work / job["own_work_seconds"]
        speedup = (
            f"{seed_work:.1f} s / {job['own_work_seconds']:.1f} s = {ratio:.1f}x",
            ratio >= SEED_SPEEDUP_TARGET,
        )
    return [
        target("pipeline's own work (first step's start to last step's end)",
               f"<= {OWN_WORK_TARGET_S:.0f} s",
               job and seconds(job["own_work_seconds"], OWN_WORK_TARGET_S)),
        target("whole training_job, wall", f"<= {JOB_WALL_TARGET_S:.0f} s",
               job and seconds(job["wall_seconds"], JOB_WALL_TARGET_S)),
        target("seed's fit+test / pipeline's own work", f">= {SEED_SPEEDUP_TARGET:.0f}x", speedup),
        target("extract_features / bf16 forward ceiling", f">= {100 * FEATURES_TARGET:.0f}%",
               share(results.get("features"), FEATURES_TARGET)),
        target("full fine-tuning / bf16 fwd+bwd ceiling", f">= {100 * FINETUNE_TARGET:.0f}%",
               share(results.get("finetune"), FINETUNE_TARGET)),
        *(target(f"{step}: parallel efficiency, 2 to 16 cores",
                 f">= {100 * EFFICIENCY_TARGET:.0f}%", efficiency(step))
          for step in ("scan", "tensors")),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.work = args.work.expanduser().resolve()
    if not args.cpu_smoke:
        require_cuda()
    print_header("gpu_check: training_job, seed recipe and ceilings on one GPU", parser, args)
    if args.cpu_smoke:
        print("NOTE: --cpu-smoke: toy sizes on the CPU; checks the script, measures nothing.")
    args.work.mkdir(parents=True, exist_ok=True)
    results, walls, failed = run_stages(args)

    print(f"\nAll stages done in {time.monotonic() - STARTED:.0f}s; load average {load_average()}.")
    print("\n## Results (measured)\n")
    print(markdown_table(numbers_table(results, walls)))
    status = report_targets(targets(results), judged=not args.cpu_smoke)
    if failed:
        print(f"Stages that did not finish: {', '.join(failed)} (logs in {args.work}). Exit 1.")
        return 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
