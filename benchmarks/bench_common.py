"""Helpers shared by the benchmark scripts: the synthetic Kaggle-layout dataset cache, child
processes measured for peak memory, the reproducing command line and markdown tables.

Not a benchmark itself; the scripts beside it import it (they run as `python benchmarks/X.py`,
which puts this folder first on sys.path)."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the package, even where it is not pip-installed
    sys.path.insert(1, str(REPO))

from bcc_pipeline.sample_data import CLASS_FOLDERS, KAGGLE_SUBDIR  # noqa: E402

KAGGLE_COUNTS: dict[str, int] = {"brain_glioma": 2004, "brain_menin": 2004, "brain_tumor": 2048}
"""Images per class of the Kaggle 'Brain Cancer - MRI dataset' (6056 in all)."""
KAGGLE_TOTAL = sum(KAGGLE_COUNTS.values())
DATASET_CACHE = Path("/tmp/bcc-bench/kaggle6056")
GIB = 1024**3


# --------------------------------------------------------------------------- command line


def explicit_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """Every (non-hidden) flag of `args` written out, defaults included."""
    parts: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest == "help" or action.help == argparse.SUPPRESS:
            continue
        value = getattr(args, action.dest)
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            if value:
                parts.append(flag)
        elif value is not None:
            parts += [flag, str(value)]
    return parts


def reproduce_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The script's command line with every flag written out, so defaults changing later
    cannot change what a printed command measures."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(Path.cwd()) if script.is_relative_to(Path.cwd()) else script
    return shlex.join([sys.executable, str(shown), *explicit_flags(parser, args)])


def print_header(title: str, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    print(f"# {title}\n")
    print("Reproduce with:\n")
    print(f"    {reproduce_command(parser, args)}\n")
    print(f"Host: {host_description()}\n", flush=True)


def add_dataset_flags(parser: argparse.ArgumentParser, data_help: str) -> None:
    """--data, --images, --size, --image-size: the 6056-image cache the scripts share."""
    parser.add_argument("--data", type=Path, default=DATASET_CACHE, help=data_help)
    parser.add_argument(
        "--images", type=int, default=KAGGLE_TOTAL, help="images in all, Kaggle class proportions"
    )
    parser.add_argument("--size", type=int, default=512, help="side of the generated JPEGs")
    parser.add_argument("--image-size", type=int, default=224, help="tensor side")


def host_description() -> str:
    import platform

    import torch

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return (
        f"{platform.node()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op threads), CPU bf16 (oneDNN) supported: {bf16}, "
        f"cuda: {torch.cuda.is_available()}, load average {load}"
    )


# --------------------------------------------------------------------------- tables


def markdown_table(rows: Sequence[Mapping[str, object]]) -> str:
    """Rows of equal keys as a GitHub markdown table; floats with 3 significant decimals."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])

    def cell(value: object) -> str:
        if isinstance(value, float):
            if value != value:  # NaN
                return "n/a"
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return str(value)

    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- dataset cache


def scaled_counts(total: int) -> dict[str, int]:
    """Per-class counts in the Kaggle proportions summing to `total` (largest remainder)."""
    if total == KAGGLE_TOTAL:
        return dict(KAGGLE_COUNTS)
    raw = {name: total * count / KAGGLE_TOTAL for name, count in KAGGLE_COUNTS.items()}
    counts = {name: int(value) for name, value in raw.items()}
    for name in sorted(raw, key=lambda n: raw[n] - counts[n], reverse=True)[
        : total - sum(counts.values())
    ]:
        counts[name] += 1
    return counts


def _class_dir(data: Path, label: str) -> Path:
    return data / KAGGLE_SUBDIR / label


def _existing_counts(data: Path) -> dict[str, int]:
    return {
        label: len(list(_class_dir(data, label).glob("*.jpg")))
        if _class_dir(data, label).is_dir()
        else 0
        for label in CLASS_FOLDERS
    }


def _existing_size(data: Path) -> int | None:
    from PIL import Image

    for label in CLASS_FOLDERS:
        first = next(iter(sorted(_class_dir(data, label).glob("*.jpg"))), None)
        if first is not None:
            with Image.open(first) as image:
                return image.width
    return None


def ensure_dataset(data: Path, counts: Mapping[str, int], size: int) -> tuple[Path, float]:
    """Synthetic JPEGs in the Kaggle layout under `data`, exactly `counts` per class at
    `size` x `size`: reused when already there, else written by generate_sample_dataset
    (max count per class, extras deleted). Returns (data, seconds spent generating).

    A folder holding a different dataset is refused, never overwritten: it may be the cache of
    a full-size run."""
    from bcc_pipeline.sample_data import generate_sample_dataset

    data = Path(data).expanduser().resolve()
    for stale in data.rglob(".*.tmp"):  # left by a generation that was killed
        stale.unlink()
    existing = _existing_counts(data)
    if existing == dict(counts) and _existing_size(data) == size:
        print(f"Reusing the dataset at {data} ({sum(counts.values())} images, {size}px).")
        return data, 0.0
    if any(existing.values()):
        raise SystemExit(
            f"{data} holds a different dataset ({existing}, {_existing_size(data)}px) than the "
            f"one asked for ({dict(counts)}, {size}px). Pass another --data/--work folder, or "
            "delete that one."
        )
    per_class = max(counts.values())
    print(
        f"Generating {per_class} x {len(counts)} synthetic {size}px JPEGs into {data} "
        "(one-time; not part of any measurement) ...",
        flush=True,
    )
    start = time.perf_counter()
    generate_sample_dataset(data, per_class=per_class, size=size)
    for label, wanted in counts.items():
        for extra in range(wanted + 1, per_class + 1):
            (_class_dir(data, label) / f"{label}_{extra:04d}.jpg").unlink()
    seconds = time.perf_counter() - start
    if _existing_counts(data) != dict(counts):
        raise RuntimeError(f"generated {_existing_counts(data)}, expected {dict(counts)}")
    print(f"Generated in {seconds:.1f}s.", flush=True)
    return data, seconds


def warm_page_cache(folder: Path) -> int:
    """Read every file once so that timings do not depend on what the disk cache held."""
    total = 0
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            total += len(path.read_bytes())
    return total


# --------------------------------------------------------------------------- child processes


@dataclass
class ChildRun:
    returncode: int
    wall_seconds: float
    max_rss_bytes: int
    """ru_maxrss of the child as wait4 reports it: the largest single process of its tree."""
    tree_peak_bytes: int
    """Largest sampled sum of RSS over the child and all its descendants (every 0.2 s)."""
    log: Path

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree_rss_bytes(root: int) -> int:
    """Sum of resident memory of `root` and its descendants (Linux /proc)."""
    children = _children_map()
    page = os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * page
        except OSError:
            continue
    return total


def run_measured(
    command: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ChildRun:
    """Run `command` to completion with its output in `log`; wall time, the child's own peak
    RSS (os.wait4, so earlier children of this process do not leak into it) and a sampled
    peak of the whole process tree."""
    log.parent.mkdir(parents=True, exist_ok=True)
    peak = 0
    done = threading.Event()
    with log.open("w") as handle:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(command), stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )

        def sample() -> None:
            nonlocal peak
            can_read = Path("/proc").is_dir()
            while can_read and not done.wait(0.2):
                peak = max(peak, tree_rss_bytes(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return ChildRun(proc.returncode, wall, usage.ru_maxrss * scale, peak, log)


# --------------------------------------------------------------------------- training_job


def training_job_config(
    data: Path,
    artifacts: Path,
    *,
    backbone: str = "vit_b_16",
    epochs: int = 10,
    patience: int = 3,
    batch_size: int = 16,
    image_size: int = 224,
    seed: int = 42,
) -> dict:
    """Run config of the seed recipe for training_job: 70/20/10 split, head only on a backbone
    with random weights (weights: none; nothing can be downloaded), Adam 1e-4, early stopping
    (patience 3 in the recipe), CPU, the feature cache left at its default (auto), accuracy
    floor 0."""
    return {
        "resources": {
            "dataset": {"config": {"data_dir": str(data)}},
            "artifacts": {"config": {"root": str(artifacts)}},
            "accelerator": {"config": {"accelerator": "cpu"}},
            # Random weights score near chance: a real floor would fail the run.
            "quality": {"config": {"accuracy_floor": 0.0}},
        },
        "ops": {
            "stratified_split": {
                "config": {
                    "seed": seed,
                    "train_fraction": 0.7,
                    "val_fraction": 0.2,
                    "test_fraction": 0.1,
                }
            },
            "preprocessed_tensors": {"config": {"image_size": image_size}},
            "vit_checkpoint": {
                "config": {
                    "backbone": backbone,
                    "weights": "none",
                    "trainable_blocks": 0,
                    "max_epochs": epochs,
                    "early_stopping_patience": patience,
                    "batch_size": batch_size,
                    "learning_rate": 0.0001,
                    "seed": seed,
                }
            },
        },
    }


def run_training_job(config: dict, run_dir: Path) -> tuple[ChildRun, Path, Path]:
    """`dagster job execute -j training_job` in a child process with a fresh DAGSTER_HOME and
    artifacts root under run_dir (emptied first). Returns (run, DAGSTER_HOME, artifacts root);
    exits with the log's tail if the job fails."""
    import shutil

    import yaml

    shutil.rmtree(run_dir, ignore_errors=True)
    home = run_dir / "dagster_home"
    home.mkdir(parents=True)
    config_file = run_dir / "run_config.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    dagster = str(Path(sys.executable).parent / "dagster")
    command = [
        dagster, "job", "execute", "-m", "bcc_pipeline.definitions", "-j", "training_job",
        "-c", str(config_file),
    ]  # fmt: skip
    print(f"    DAGSTER_HOME={home} {shlex.join(command)}", flush=True)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    run = run_measured(command, run_dir / "dagster.log", env=env, cwd=run_dir)
    if run.returncode != 0:
        print(run.tail())
        raise SystemExit(f"training_job failed (exit {run.returncode}); log: {run.log}")
    artifacts = Path(config["resources"]["artifacts"]["config"]["root"])
    return run, home, artifacts


def read_training_job(home: Path, artifacts: Path) -> dict:
    """What a training_job run left: split counts, the checkpoint's metrics, test accuracy,
    each step's wall time (Dagster step stats) and the seconds the data assets recorded in
    their metadata."""
    import json
    import math

    import dagster as dg
    import torch

    report_path = next(artifacts.glob("test_metrics_report/*/report.json"))
    run_id = report_path.parent.name
    report = json.loads(report_path.read_text())
    checkpoint = torch.load(artifacts / "vit_checkpoint" / run_id / "model.pt", weights_only=True)
    meta = json.loads((artifacts / "preprocessed_tensors" / run_id / "meta.json").read_text())
    counts = {name: split["count"] for name, split in meta["splits"].items()}

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        steps = {
            stat.step_key: (stat.end_time or math.nan) - (stat.start_time or math.nan)
            for stat in instance.get_run_step_stats(run_id)
        }
        recorded = {}
        for name in ("raw_image_manifest", "preprocessed_tensors"):
            event = instance.get_latest_materialization_event(dg.AssetKey(name))
            metadata = event.asset_materialization.metadata if event else {}
            recorded[name] = {key: value.value for key, value in metadata.items()}
    finally:
        instance.dispose()
    return {
        "run_id": run_id,
        "counts": counts,
        "metrics": checkpoint["metrics"],
        "test_accuracy": report["accuracy"],
        "n_test": report["n_test"],
        "steps": steps,
        "scan_seconds": float(recorded["raw_image_manifest"].get("scan_seconds", math.nan)),
        "tensor_seconds": float(recorded["preprocessed_tensors"].get("seconds", math.nan)),
        "tensor_mib": float(recorded["preprocessed_tensors"].get("total_MiB", math.nan)),
    }
