"""How long loading the code location takes: what the UI, the daemon and every run pay first.

Each repeat is a fresh `python -c "import bcc_pipeline.definitions"` (the whole process: the
interpreter, Dagster, pandas and the pipeline's modules), so nothing is cached between them but
the OS's page cache; the first repeat warms it and is reported apart. Target (issue 10): under
3 s here, which means no deep-learning stack (torch, Lightning) at import.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from bench_common import Target, markdown_table, print_header, report_targets

TARGET_SECONDS = 3.0
HEAVY = ("torch", "torchvision", "pytorch_lightning", "scipy", "matplotlib", "mlflow")


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


if __name__ == "__main__":
    raise SystemExit(main())
