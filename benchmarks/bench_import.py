"""How long loading the code location takes: what the UI, the daemon and every run pay first.

Each repeat is a fresh `python -c "import bcc_pipeline.definitions"` (the whole process: the
interpreter, Dagster, pandas and the pipeline's modules), so nothing is cached between them but
the OS's page cache; the first repeat warms it and is reported apart. Target (issue 10): under
3 s here, which means no deep-learning stack (torch, Lightning) at import.

Then, for the record (no target), what a run imports later and what opening a new MLflow store
costs, in the order a training run meets them, each on top of the ones before it, in a fresh
process per repeat: the fixed cost a small run cannot shrink.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import Target, markdown_table, print_header, report_targets

TARGET_SECONDS = 3.0
HEAVY = ("torch", "torchvision", "pytorch_lightning", "scipy", "matplotlib", "mlflow")
RUN_STACK = {
    "import torch (the launch check)": "import torch",
    "+ import torchvision.models (it imports torch._dynamo)": "import torchvision.models",
    "+ import pytorch_lightning (training; with torchmetrics, scipy)": "import pytorch_lightning",
    "+ import bcc_pipeline.tracking (MLflow)": "import bcc_pipeline.tracking",
    "+ open a new SQLite MLflow store (its migrations), as a run does": (
        "from bcc_pipeline.tracking import TrackingStore; "
        "TrackingStore.open(f'sqlite:///{folder}/mlflow.db', 'bench')"
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed imports after the first")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    print_header("bench_import: loading the code location", parser, args)
    probe = (
        "import sys, bcc_pipeline.definitions; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    seconds, loaded = [], ""
    for _ in range(args.repeats + 1):
        start = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        )
        seconds.append(time.perf_counter() - start)
        loaded = completed.stdout.strip()
    first, timed = seconds[0], seconds[1:]
    print("## Results (measured)\n")
    print(
        markdown_table(
            [
                {"measurement": "first import (page cache warming)", "seconds": first},
                {"measurement": f"median of {len(timed)}", "seconds": statistics.median(timed)},
                {"measurement": f"slowest of {len(timed)}", "seconds": max(timed)},
                {"measurement": "heavy modules imported", "seconds": loaded or "none"},
            ]
        )
    )
    print(f"\n## What a run imports later (measured, median of {args.repeats})\n")
    print(markdown_table(_run_stack_rows(args.repeats)))
    median = statistics.median(timed)
    return report_targets(
        [
            Target(
                "code location loads (whole process, median)",
                f"{median:.2f} s; heavy modules: {loaded or 'none'}",
                f"< {TARGET_SECONDS:.0f} s, no deep-learning stack",
                median < TARGET_SECONDS and not loaded,
            )
        ]
    )


def _run_stack_rows(repeats: int) -> list[dict[str, str | float]]:
    """Each RUN_STACK step's seconds on top of the steps before it: one fresh process per
    repeat runs them all in order and prints its timings."""
    lines = ["import json, sys, time", "folder = sys.argv[1]", "seconds = []"]
    for statement in RUN_STACK.values():
        lines += ["start = time.perf_counter()", statement]
        lines.append("seconds.append(time.perf_counter() - start)")
    lines.append("print(json.dumps(seconds))")
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(repeats):
            folder = Path(scratch) / str(repeat)  # a new store each time
            folder.mkdir()
            completed = subprocess.run(
                [sys.executable, "-c", "\n".join(lines), str(folder)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    return [
        {"step": name, "seconds": statistics.median(run[i] for run in runs)}
        for i, name in enumerate(RUN_STACK)
    ]


if __name__ == "__main__":
    raise SystemExit(main())
