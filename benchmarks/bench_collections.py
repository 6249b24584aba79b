"""Garbage collection in a training_job run: every full (generation 2) collection CPython ran,
when, for how long, and in which part of the run.

Runs `dagster job execute -j training_job` as bench_job.py does (fresh DAGSTER_HOME, the seed
recipe's config), but through a small wrapper that adds a gc callback before Dagster starts
and writes what it saw when the process exits. A full collection walks every tracked object;
once torch, torchvision, Lightning and MLflow are imported that is over half a million, so
each costs tenths of a second, and imports set many off (one each time the heap grows by a
quarter). The pipeline imports its deep-learning stack with collection paused and freezes it
(bcc_pipeline/garbage.py); this shows what that leaves.

Target (exit status 1 when missed): the full collections from the launch check on (the run's
own, after Dagster's CLI and the code location have loaded) take < 0.5 s in total.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench_common import (
    Target,
    add_generated_dataset_flags,
    ensure_generated_dataset,
    markdown_table,
    print_header,
    report_targets,
    run_training_job,
    training_job_config,
)

TARGET_SECONDS = 0.5
WRAPPER = """
import atexit, gc, json, runpy, sys, time, traceback
began, log, start, launch = time.perf_counter(), [], [0.0], []
out = sys.argv.pop(1)
def mark(event, args):
    if event == "import" and args[0] == "bcc_pipeline.launch_checks" and not launch:
        launch.append(time.perf_counter() - began)
sys.addaudithook(mark)
def where():
    frames = [f for f in traceback.extract_stack() if "bcc_pipeline" in f.filename]
    return f"{frames[0].filename.split('bcc_pipeline/')[-1]}:{frames[0].name}" if frames else ""
def watch(phase, info):
    if info["generation"] != 2:
        return
    if phase == "start":
        start[0] = time.perf_counter()
    else:
        log.append([start[0] - began, time.perf_counter() - start[0], info["collected"], where()])
gc.callbacks.append(watch)
atexit.register(lambda: open(out, "w").write(json.dumps({"launch": launch, "full": log})))
sys.argv[0] = "dagster"
runpy.run_module("dagster", run_name="__main__", alter_sys=True)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_generated_dataset_flags(parser, Path("/tmp/bcc-bench/training/data_40x3_512px"))
    parser.add_argument("--backbone", default="vit_b_16", help="vit_checkpoint backbone")
    parser.add_argument("--epochs", type=int, default=10, help="max_epochs (patience the same)")
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/bcc-bench/collections"), help="run folder"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.data, args.work = args.data.expanduser().resolve(), args.work.expanduser().resolve()
    print_header("bench_collections: full garbage collections in a training_job run", parser, args)
    ensure_generated_dataset(args)
    config = training_job_config(
        args.data,
        args.work / "artifacts",
        backbone=args.backbone,
        epochs=args.epochs,
        patience=args.epochs,
    )
    seen = args.work.parent / f"{args.work.name}-collections.json"
    run, _ = run_training_job(config, args.work, dagster=[sys.executable, "-c", WRAPPER, str(seen)])
    if run.returncode != 0:
        print(f"training_job failed (exit {run.returncode}); see {args.work / 'dagster.log'}")
        return 1
    seen_data = json.loads(seen.read_text())
    collections, (launch,) = seen_data["full"], seen_data["launch"]
    print("\n## Full collections (measured)\n")
    print(
        markdown_table(
            [
                {
                    "at s": at,
                    "seconds": seconds,
                    "objects collected": collected,
                    "inside (first bcc_pipeline frame)": inside or "Dagster, before the run",
                }
                for at, seconds, collected, inside in collections
            ]
        )
    )
    from_launch = [c for c in collections if c[0] >= launch]
    total = sum(c[1] for c in collections)
    after = sum(c[1] for c in from_launch)
    print(
        f"\n{len(collections)} full collections, {total:.2f} s in all; the launch check began "
        f"at {launch:.2f} s; {len(from_launch)} from then on, {after:.2f} s."
    )
    return report_targets(
        [
            Target(
                "full collections from the launch check on",
                f"{after:.2f} s ({len(from_launch)} collections)",
                f"< {TARGET_SECONDS} s",
                after < TARGET_SECONDS,
            )
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
