"""How the host steps scale with cores: the raw_image_manifest scan (read, sha256, decode,
perceptual hash) and the preprocessed_tensors decoding (re-read, sha256 check, decode, resize
to 224 px) of one folder, each with --low and with --high worker processes, on a warm page
cache. Parallel efficiency = (seconds at --low / seconds at --high) / (--high / --low): 100%
when 8x the processes take an eighth of the time.

Target (issue 10): >= 70% from 2 to 16 processes for both steps, judged when --high is at
least 4x --low on a folder of at least 6000 images (the GPU check runs it on its 16-core
machine: this project's CPU machine has 2 cores). Exit status 1 when missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from bench_common import (
    FRACTIONS,
    SPLIT_SEED,
    Target,
    load_average,
    markdown_table,
    print_header,
    report_targets,
    warm_page_cache,
    write_result,
)
from bench_manifest import timed, warm_up_decoders

from bcc_pipeline.data.manifest import require_usable, scan_folder
from bcc_pipeline.data.split import split_fingerprint, stratified_group_split
from bcc_pipeline.data.tensors import write_tensor_splits

EFFICIENCY_TARGET = 0.70
JUDGED_FROM_IMAGES = 6000
JUDGED_FROM_RATIO = 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="an image folder (read only)")
    parser.add_argument("--low", type=int, default=2, help="processes of the baseline runs")
    parser.add_argument(
        "--high", type=int, default=os.cpu_count() or 1, help="processes of the wide runs"
    )
    parser.add_argument("--image-size", type=int, default=224, help="tensor side in pixels")
    parser.add_argument(
        "--work", type=Path, default=None, help="where tensors go (default: a temp dir, removed)"
    )
    parser.add_argument("--result-json", type=Path, default=None, help="write the numbers here")
    return parser


def efficiency(low_seconds: float, high_seconds: float, low: int, high: int) -> float:
    return (low_seconds / max(high_seconds, 1e-9)) / (high / low)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    print_header("bench_scaling: the host steps on few and on many processes", parser, args)
    warmed = warm_page_cache(args.data)
    print(f"Page cache warmed: {warmed / 2**20:.0f} MiB read.")
    warm_up_decoders(args.data)
    print("\nTiming:")
    seconds: dict[str, dict[int, float]] = {"scan": {}, "tensors": {}}
    for workers in (args.low, args.high):
        manifest, seconds["scan"][workers] = timed(
            f"scan_folder, {workers} processes", scan_folder, args.data, workers=workers
        )
    require_usable(manifest, args.data)
    images = int((manifest["status"] == "ok").sum())
    table = stratified_group_split(manifest, FRACTIONS, SPLIT_SEED).table
    work = Path(tempfile.mkdtemp(prefix="bench-scaling-")) if args.work is None else args.work
    try:
        for workers in (args.low, args.high):
            _, seconds["tensors"][workers] = timed(
                f"write_tensor_splits at {args.image_size}, {workers} processes",
                write_tensor_splits,
                table,
                args.data,
                work / f"tensors_{workers}",
                args.image_size,
                split_fingerprint(table),
                workers=workers,
            )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"Load average after: {load_average()}\n")

    shares = {
        step: efficiency(by[args.low], by[args.high], args.low, args.high)
        for step, by in seconds.items()
    }
    print("## Results (measured)\n")
    print(
        markdown_table(
            [
                {
                    "step": step,
                    "images": images,
                    f"seconds, {args.low} processes": by[args.low],
                    f"seconds, {args.high} processes": by[args.high],
                    "speedup": by[args.low] / max(by[args.high], 1e-9),
                    "parallel efficiency": f"{100 * shares[step]:.0f}%",
                }
                for step, by in seconds.items()
            ]
        )
    )
    judged = images >= JUDGED_FROM_IMAGES and args.high >= JUDGED_FROM_RATIO * args.low
    write_result(
        args.result_json,
        {"images": images, "low": args.low, "high": args.high, "seconds": seconds,
         "efficiency": shares, "judged": judged},
    )  # fmt: skip
    return report_targets(
        [
            Target(
                f"{step}: parallel efficiency from {args.low} to {args.high} processes",
                f"{100 * share:.0f}%",
                f">= {100 * EFFICIENCY_TARGET:.0f}%",
                share >= EFFICIENCY_TARGET if judged else None,
            )
            for step, share in shares.items()
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
