"""Helpers shared by the benchmark scripts: the reproducing command line, markdown tables and
targets, the synthetic Kaggle-layout dataset (generated in parallel), the pipeline's own split
sizes, child processes measured for time and memory, and training_job runs.

Not a benchmark itself; the scripts beside it import it (they run as `python benchmarks/X.py`,
which puts this folder first on sys.path)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the package, even where it is not pip-installed
    sys.path.insert(1, str(REPO))

from bcc_pipeline.sample_data import CLASS_FOLDERS, KAGGLE_SUBDIR, image_name  # noqa: E402

KAGGLE_COUNTS: dict[str, int] = {"brain_glioma": 2004, "brain_menin": 2004, "brain_tumor": 2048}
"""Files per class of the Kaggle 'Brain Cancer - MRI dataset' (6056 in all)."""
KAGGLE_TOTAL = sum(KAGGLE_COUNTS.values())
KAGGLE_COPIES = 44
"""Of brain_tumor's 2048 files, this many are byte-identical '... - Copy.jpg' duplicates."""
KAGGLE_ORIGINALS: dict[str, int] = {
    label: count - (KAGGLE_COPIES if label == "brain_tumor" else 0)
    for label, count in KAGGLE_COUNTS.items()
}
FRACTIONS = {"train": 0.7, "val": 0.2, "test": 0.1}
SPLIT_SEED = 42
DATASET_CACHE = Path("/tmp/bcc-bench/kaggle6056")
GIB = 1024**3
COPY_SUFFIX = " - Copy.jpg"


# --------------------------------------------------------------------------- command line


def explicit_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """Every flag of `args` written out, defaults included."""
    parts: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
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


def add_generated_dataset_flags(
    parser: argparse.ArgumentParser,
    data: Path,
    per_class: int = 40,
    copies: int = 0,
) -> None:
    """--data, --per-class, --copies, --size: a Kaggle-layout folder of synthetic JPEGs,
    generated when absent (see ensure_generated_dataset)."""
    parser.add_argument(
        "--data",
        type=Path,
        default=data,
        help="Kaggle-layout folder; generated (--per-class, --copies, --size) when absent",
    )
    parser.add_argument(
        "--per-class", type=int, default=per_class, help="distinct images per class"
    )
    parser.add_argument("--copies", type=int, default=copies, help="'- Copy.jpg' files")
    parser.add_argument("--size", type=int, default=512, help="side of the generated JPEGs")


def ensure_generated_dataset(
    args: argparse.Namespace, workers: int | None = None
) -> tuple[Path, float]:
    """ensure_dataset for the flags of add_generated_dataset_flags."""
    counts = dict.fromkeys(CLASS_FOLDERS, args.per_class)
    return ensure_dataset(args.data, counts, args.size, args.copies, workers)


def calls_per_second(
    step: Callable[[], object], device: Any, warmup: int, iterations: int
) -> float:
    """Calls of `step` per second: `warmup` untimed calls, then `iterations` timed between
    synchronisations of `device` (a torch.device), so queued GPU work is counted."""
    import torch

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    synchronize()
    return iterations / (time.perf_counter() - start)


def share_of_ceiling(
    name: str, pipeline: float, ceiling: float, goal: float, judged: bool
) -> Target:
    """The target `pipeline` images/s >= goal x `ceiling` images/s, judged only when `judged`."""
    ratio = pipeline / ceiling
    return Target(
        name,
        f"{pipeline:.0f} / {ceiling:.0f} images/s = {100 * ratio:.0f}%",
        f">= {100 * goal:.0f}%",
        ratio >= goal if judged else None,
    )


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def host_description() -> str:
    import platform

    import torch

    cuda = "none"
    if torch.cuda.is_available():
        cuda = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name()}"
    return (
        f"{platform.node()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} intra-op threads), CPU bf16 "
        f"(oneDNN) supported: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}, CUDA GPUs: "
        f"{cuda}, load average {load_average()}"
    )


def write_result(path: Path | None, result: Mapping[str, Any]) -> None:
    """The numbers a parent script (bench_training.py, gpu_check.py) reads back."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))


# --------------------------------------------------------------------------- tables, targets


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


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    goal: str
    met: bool | None
    """None: not judged (not the documented size, or a stage did not run)."""


def report_targets(targets: Sequence[Target], *, judged: bool = True) -> int:
    """Print the targets as a table; the exit status: 1 when any judged target was missed.
    judged=False (a quick check at toy sizes) prints them without verdicts and returns 0."""
    print("\n## Targets\n")
    verdict = {True: "met", False: "**MISSED**", None: "not judged"}
    print(
        markdown_table(
            [
                {
                    "target": t.name,
                    "measured": t.measured,
                    "goal": t.goal,
                    "verdict": verdict[t.met] if judged else "not judged (quick check)",
                }
                for t in targets
            ]
        )
    )
    missed = [t.name for t in targets if t.met is False]
    if not judged:
        print("\nA quick check at toy sizes: targets are not judged; exit status 0.")
        return 0
    if missed:
        print(f"\nMissed: {'; '.join(missed)}. Exit status 1.")
        return 1
    if all(t.met is None for t in targets):
        print("\nNo target judged (not the documented setup). Exit status 0.")
        return 0
    print("\nEvery judged target met. Exit status 0.")
    return 0


# --------------------------------------------------------------------------- dataset


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


def _existing(data: Path) -> tuple[dict[str, int], int]:
    """(originals per class, '... - Copy.jpg' files in brain_tumor) under `data`."""
    originals, copies = {}, 0
    for label in CLASS_FOLDERS:
        names = [p.name for p in _class_dir(data, label).glob("*.jpg")]
        copied = sum(name.endswith(COPY_SUFFIX) for name in names)
        originals[label] = len(names) - copied
        copies += copied
    return originals, copies


def _existing_size(data: Path) -> int | None:
    from PIL import Image

    for label in CLASS_FOLDERS:
        first = _class_dir(data, label) / image_name(label, 1)
        if first.exists():
            with Image.open(first) as image:
                return image.width
    return None


def _write_slice(job: tuple[Path, str, int, int]) -> None:
    """generate_sample_dataset's own writer, for a process pool (one argument per job)."""
    from bcc_pipeline.sample_data import write_slice

    write_slice(*job)


def ensure_dataset(
    data: Path,
    counts: Mapping[str, int],
    size: int,
    copies: int = 0,
    workers: int | None = None,
) -> tuple[Path, float]:
    """Synthetic JPEGs in the Kaggle layout under `data`: `counts` images per class, the same
    bytes generate_sample_dataset writes (each image has its own seed, so a process pool of
    `workers` can draw them in any order), plus `copies` byte-identical '... - Copy.jpg' files
    of the first brain_tumor images, as in the Kaggle download. Reused when already there.
    Returns (data, seconds spent generating).

    A folder holding a different dataset is refused, never overwritten: it may be the cache of
    a full-size run."""
    import shutil
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    data = Path(data).expanduser().resolve()
    for stale in data.rglob(".*.tmp"):  # left by a generation that was killed
        stale.unlink()
    wanted = (dict(counts), copies)
    if _existing(data) == wanted and _existing_size(data) == size:
        print(f"Reusing the dataset at {data} ({sum(counts.values()) + copies} images, {size}px).")
        return data, 0.0
    if any(_existing(data)[0].values()):
        raise SystemExit(
            f"{data} holds a different dataset ({_existing(data)}, {_existing_size(data)}px) "
            f"than the one asked for ({wanted}, {size}px). Pass another --data/--work folder, "
            "or delete that one."
        )
    workers = workers or os.cpu_count() or 1
    print(
        f"Generating {sum(counts.values())} synthetic {size}px JPEGs (+{copies} copies) into "
        f"{data} with {workers} processes ...",
        flush=True,
    )
    start = time.perf_counter()
    jobs = []
    for label in CLASS_FOLDERS:
        folder = _class_dir(data, label)
        folder.mkdir(parents=True, exist_ok=True)
        jobs += [(folder, label, n, size) for n in range(1, counts.get(label, 0) + 1)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_write_slice, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    tumor = _class_dir(data, "brain_tumor")
    for n in range(1, copies + 1):
        original = tumor / image_name("brain_tumor", n)
        shutil.copyfile(original, original.with_name(original.stem + COPY_SUFFIX))
    seconds = time.perf_counter() - start
    if _existing(data) != wanted:
        raise RuntimeError(f"generated {_existing(data)}, expected {wanted}")
    print(f"Generated in {seconds:.1f}s.", flush=True)
    return data, seconds


def warm_page_cache(folder: Path) -> int:
    """Read every file once so that timings do not depend on what the disk cache held."""
    total = 0
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            total += len(path.read_bytes())
    return total


def split_counts(
    per_class: Mapping[str, int], copies: int = 0, seed: int = SPLIT_SEED
) -> dict[str, int]:
    """Train/val/test sizes that the pipeline's own split (stratified_group_split, 70/20/10)
    gives a dataset of `per_class` distinct images plus `copies` byte-identical brain_tumor
    files, computed on a manifest of random digests rather than written down, so that they
    follow the pipeline when its rounding or grouping changes."""
    import numpy as np
    import pandas as pd

    from bcc_pipeline.data.split import SPLITS, stratified_group_split

    rng = np.random.default_rng(0)
    rows = [
        {
            "path": f"{label}/{image_name(label, n)}",
            "label": label,
            "sha256": rng.bytes(32).hex(),
            "phash": rng.bytes(32).hex(),
            "status": "ok",
        }
        for label, count in per_class.items()
        for n in range(1, count + 1)
    ]
    tumor = [row for row in rows if row["label"] == "brain_tumor"]
    rows += [{**row, "path": row["path"][: -len(".jpg")] + COPY_SUFFIX} for row in tumor[:copies]]
    table = stratified_group_split(pd.DataFrame(rows), FRACTIONS, seed).table
    return {name: int((table["split"] == name).sum()) for name in SPLITS}


def cached_views(counts: Mapping[str, int]) -> int:
    """Forward passes the feature cache makes: each training image and its mirror, and val."""
    return 2 * counts["train"] + counts["val"]


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
    launched_at: float
    """time.time() just before the child started (to place Dagster's step times)."""
    timed_out: bool = False

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


def process_tree(root: int) -> list[int]:
    """`root` and its descendants (Linux /proc)."""
    children = _children_map()
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def tree_rss_bytes(root: int) -> int:
    """Sum of resident memory of `root` and its descendants."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * page
        except OSError:
            continue
    return total


def _kill_tree(root: int) -> None:
    """SIGKILL `root` and every descendant, all listed before any dies (an orphan would
    leave the tree)."""
    for pid in process_tree(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def run_measured(
    command: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
) -> ChildRun:
    """Run `command` to completion with its output in `log`; wall time, the child's own peak
    RSS (os.wait4, so earlier children of this process do not leak into it) and a sampled
    peak of the whole process tree. After `timeout` seconds the whole tree is killed
    (timed_out=True), so one slow stage cannot eat a fixed time budget."""
    log.parent.mkdir(parents=True, exist_ok=True)
    peak = 0
    done = threading.Event()
    timed_out = threading.Event()
    with log.open("w") as handle:
        launched_at = time.time()
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(command), stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )

        def watch() -> None:
            nonlocal peak
            deadline = None if timeout is None else start + timeout
            while not done.wait(0.2):
                peak = max(peak, tree_rss_bytes(proc.pid))
                if deadline is not None and time.perf_counter() > deadline:
                    timed_out.set()
                    _kill_tree(proc.pid)
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # interrupted: leave nothing running behind
            _kill_tree(proc.pid)
            raise
        finally:
            wall = time.perf_counter() - start
            done.set()
            watcher.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return ChildRun(
        proc.returncode,
        wall,
        usage.ru_maxrss * scale,
        peak,
        log,
        launched_at,
        timed_out.is_set(),
    )


def run_script(
    script: str,
    flags: Sequence[str],
    work: Path,
    timeout: float | None = None,
) -> tuple[ChildRun, dict[str, Any] | None]:
    """benchmarks/<script> in a child process with `--result-json`; its result (None when it
    failed or timed out) and how it ran. Its output goes to work/<script>.log. Exit status 1
    with a result is a finished measurement that missed the child's own target (every
    benchmark's convention): its numbers count."""
    name = Path(script).stem
    result_json = work / f"{name}.json"
    result_json.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(Path(__file__).resolve().parent / script),
        *flags,
        "--result-json",
        str(result_json),
    ]
    print(f"  $ {shlex.join(command)}", flush=True)
    run = run_measured(command, work / f"{name}.log", timeout=timeout)
    if run.timed_out:
        print(f"  {name}: TIMED OUT after {timeout:.0f}s; log: {run.log}", flush=True)
        return run, None
    if run.returncode not in (0, 1) or not result_json.exists():
        print(run.tail(3000))
        print(f"  {name}: FAILED (exit {run.returncode}); log: {run.log}", flush=True)
        return run, None
    missed = " (its own target missed: exit 1)" if run.returncode == 1 else ""
    print(f"  {name}: done in {run.wall_seconds:.1f}s{missed}", flush=True)
    return run, json.loads(result_json.read_text())


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
    seed: int = SPLIT_SEED,
    trainable_blocks: int = 0,
    accelerator: str = "cpu",
    precision: str = "32-true",
) -> dict:
    """Run config of the seed recipe for training_job: 70/20/10 split, head only on a backbone
    with random weights (weights: none; nothing can be downloaded), Adam 1e-4, early stopping
    (patience 3 in the recipe), CPU, the feature cache left at its default (auto), accuracy
    floor 0."""
    return {
        "resources": {
            "dataset": {"config": {"data_dir": str(data)}},
            "artifacts": {"config": {"root": str(artifacts)}},
            "accelerator": {"config": {"accelerator": accelerator, "precision": precision}},
            # Random weights score near chance: a real floor would fail the run.
            "quality": {"config": {"accuracy_floor": 0.0}},
        },
        "ops": {
            "stratified_split": {"config": {"seed": seed, **_fraction_config()}},
            "preprocessed_tensors": {"config": {"image_size": image_size}},
            "vit_checkpoint": {
                "config": {
                    "backbone": backbone,
                    "weights": "none",
                    "trainable_blocks": trainable_blocks,
                    "max_epochs": epochs,
                    "early_stopping_patience": patience,
                    "batch_size": batch_size,
                    "learning_rate": 0.0001,
                    "seed": seed,
                }
            },
        },
    }


def _fraction_config() -> dict[str, float]:
    return {f"{name}_fraction": fraction for name, fraction in FRACTIONS.items()}


def run_training_job(
    config: dict,
    run_dir: Path,
    timeout: float | None = None,
    dagster: Sequence[str] = (sys.executable, "-m", "dagster"),
) -> tuple[ChildRun, Path]:
    """`dagster job execute -j training_job` in a child process with a fresh DAGSTER_HOME
    under run_dir (emptied first). Returns (run, DAGSTER_HOME); check run.returncode.
    `dagster`: the command that runs Dagster's CLI (default: `python -m dagster`, the
    `dagster` command, found wherever this Python keeps it)."""
    import shutil

    import yaml

    shutil.rmtree(run_dir, ignore_errors=True)
    home = run_dir / "dagster_home"
    home.mkdir(parents=True)
    config_file = run_dir / "run_config.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [
        *dagster, "job", "execute", "-m", "bcc_pipeline.definitions",
        "-j", "training_job", "-c", str(config_file),
    ]  # fmt: skip
    print(f"  $ DAGSTER_HOME={home} {shlex.join(command)}", flush=True)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    if str(REPO) not in env.get("PYTHONPATH", "").split(os.pathsep):  # not pip-installed
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    run = run_measured(command, run_dir / "dagster.log", env=env, cwd=run_dir, timeout=timeout)
    return run, home


JOB_ASSETS = (
    "raw_image_manifest",
    "stratified_split",
    "preprocessed_tensors",
    "vit_checkpoint",
    "test_metrics_report",
)


def read_training_job(home: Path, run: ChildRun) -> dict[str, Any]:
    """What the one run in DAGSTER_HOME `home` recorded: each step's seconds (step stats), the
    pipeline's own work (first step's start to last step's end), what came before and after
    it in the process, split sizes, and the metadata of every asset."""
    import dagster as dg

    from bcc_pipeline.data.tensors import TensorSplits

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        (record,) = instance.get_runs(limit=2)
        stats = [s for s in instance.get_run_step_stats(record.run_id) if s.end_time]
        metadata = {}
        for name in JOB_ASSETS:
            event = instance.get_latest_materialization_event(dg.AssetKey(name))
            values = event.asset_materialization.metadata if event else {}
            metadata[name] = {key: value.value for key, value in values.items()}
    finally:
        instance.dispose()
    first = min(stat.start_time for stat in stats)
    last = max(stat.end_time for stat in stats)
    tensors = TensorSplits.open(metadata["preprocessed_tensors"]["artifact_path"])
    counts = {split: len(tensors.labels(split)) for split in ("train", "val", "test")}
    return {
        "run_id": record.run_id,
        "status": str(record.status.value),
        "steps": {stat.step_key: stat.end_time - stat.start_time for stat in stats},
        "before_first_step_seconds": first - run.launched_at,
        "own_work_seconds": last - first,
        "after_last_step_seconds": run.launched_at + run.wall_seconds - last,
        "wall_seconds": run.wall_seconds,
        "max_rss_bytes": run.max_rss_bytes,
        "tree_peak_bytes": run.tree_peak_bytes,
        "counts": counts,
        "tensors_path": metadata["preprocessed_tensors"]["artifact_path"],
        "metadata": {
            name: {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))}
            for name, values in metadata.items()
        },
    }
