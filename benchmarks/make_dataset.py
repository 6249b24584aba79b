"""Write the synthetic Kaggle-layout dataset with every core: the same bytes that
bcc_pipeline.sample_data.generate_sample_dataset writes, in a fraction of its time.

generate_sample_dataset draws one image after another with sample_data.write_slice; each image
has its own seed, so a process pool running the same write_slice can draw them in any order and
write identical files. The defaults are the Kaggle
download's shape: 2004 images per class at 512 px, plus 44 byte-identical
'brain_tumor_NNNN - Copy.jpg' files in brain_tumor: 6056 files. An existing folder holding
exactly that is reused; one holding anything else is refused.

Not a benchmark (no target); gpu_check.py runs it as its first stage and prints its time.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench_common import (
    DATASET_CACHE,
    KAGGLE_COPIES,
    KAGGLE_ORIGINALS,
    add_generated_dataset_flags,
    ensure_generated_dataset,
    print_header,
    write_result,
)

from bcc_pipeline.sample_data import CLASS_FOLDERS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_generated_dataset_flags(
        parser,
        DATASET_CACHE.with_name("kaggle6056-copies"),
        KAGGLE_ORIGINALS["brain_glioma"],
        KAGGLE_COPIES,
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument("--result-json", type=Path, default=None, help="write the numbers here")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    print_header("make_dataset: the synthetic Kaggle layout, in parallel", parser, args)
    data, seconds = ensure_generated_dataset(args, args.workers)
    files = len(CLASS_FOLDERS) * args.per_class + args.copies
    write_result(args.result_json, {"data": str(data), "files": files, "seconds": seconds})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
