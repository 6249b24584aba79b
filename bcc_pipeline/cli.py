"""`bcc-pipeline`: generate the synthetic sample, classify images, run the demo end to end."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bcc_pipeline import sample_data

if TYPE_CHECKING:
    import dagster as dg

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
UNCERTAIN_BELOW = 0.6
"""predict's default: below this calibrated top probability a prediction is marked uncertain."""


class DemoSetupError(ValueError):
    """What the demo needs before it runs (its run config, DAGSTER_HOME) is wrong; the message
    says what, in one line."""


def _sample_data(args: argparse.Namespace) -> int:
    from bcc_pipeline.storage import DiskFullError, UnwritableDirError

    try:
        root = sample_data.create_sample_dataset(
            args.out, per_class=args.per_class, size=args.size, seed=args.seed
        )
    except (UnwritableDirError, DiskFullError, sample_data.OccupiedFolderError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.per_class} SYNTHETIC images per class under {root}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from bcc_pipeline.ml.checkpoint import CheckpointError
    from bcc_pipeline.ml.explain import ExplanationUnavailableError
    from bcc_pipeline.ml.predict import predict_files
    from bcc_pipeline.storage import UnwritableDirError, check_writable_dir

    failed = 0
    try:
        if args.explain is not None:
            check_writable_dir(args.explain)
        results = predict_files(
            args.checkpoint,
            args.images,
            uncertain_below=args.uncertain_below,
            explain_dir=args.explain,
        )
        for result in results:
            failed += "error" in result
            try:
                print(json.dumps(result, allow_nan=False), flush=True)
            except BrokenPipeError:
                raise  # the reader has gone (`| head -1`): main stops quietly
            except OSError as err:  # a full disk, /dev/full: the results go nowhere
                print(f"error: cannot write the results: {err.strerror or err}", file=sys.stderr)
                return 2
    except (CheckpointError, UnwritableDirError, ExplanationUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if failed else 0


def _demo(args: argparse.Namespace) -> int:
    from bcc_pipeline.storage import DiskFullError, UnwritableDirError

    try:
        config, job, data_dir = _demo_run(args.config)
        instance = _dagster_instance()
        if not data_dir.exists():
            print(f"generating the SYNTHETIC sample dataset in {data_dir} ...", flush=True)
            sample_data.create_sample_dataset(data_dir, per_class=args.per_class, seed=0)
    except (
        DemoSetupError,
        UnwritableDirError,
        DiskFullError,
        sample_data.OccupiedFolderError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.verbose:
        config["loggers"] = {"console": {"config": {"log_level": "DEBUG", "stack_traces": True}}}
    result = job.execute_in_process(run_config=config, instance=instance, raise_on_error=False)
    if not result.success:
        failures = result.get_step_failure_events()
        if any(event.step_failure_data.error_source.name == "INTERRUPT" for event in failures):
            raise KeyboardInterrupt  # Dagster caught the Ctrl-C (or kill) in a step
        print("demo run failed; see the log above (--verbose shows every event)", file=sys.stderr)
        return 1
    report_path = Path(result.output_for_node("test_metrics_report"))
    report = json.loads(report_path.read_text())
    low, high = report["accuracy_ci95"]
    print(
        f"\nSYNTHETIC demo data: test accuracy {report['accuracy']:.3f} "
        f"(95% CI {low:.3f}-{high:.3f}, n_test {report['n_test']}), "
        f"macro F1 {report['macro_f1']:.3f}\n"
        f"report with plots: {report_path.with_name('report.md')}\n"
        f"report.json: {report_path}\n"
        f"checkpoint: {result.output_for_node('vit_checkpoint')}"
    )
    training = result.asset_materializations_for_node("vit_checkpoint")[0].metadata
    if "mlflow_tracking_uri" in training:
        uri = training["mlflow_tracking_uri"].value
        print(f"runs in MLflow: mlflow ui --backend-store-uri {uri} --host 127.0.0.1")
    return 0


def _demo_run(config_file: Path) -> tuple[dict[str, Any], dg.JobDefinition, Path]:
    """The run config, training_job (Dagster has checked the config against it) and the data
    folder the run will read: data_dir, else what the dataset resource falls back to."""

    from bcc_pipeline.definitions import defs
    from bcc_pipeline.errors import ConfigError
    from bcc_pipeline.resources import DatasetResource
    from bcc_pipeline.run_config import configured_data_dir, read_run_config

    if not config_file.is_file():
        raise DemoSetupError(
            f"run config {config_file} not found; run from a checkout of bcc_pipeline "
            "(configs/demo.yaml) or pass --config"
        )
    job = defs.resolve_job_def("training_job")
    try:
        config = read_run_config(config_file, f"run config {config_file}")
        data_dir = configured_data_dir(job, config, f"run config {config_file}")
    except ConfigError as err:
        raise DemoSetupError(str(err)) from None
    if not data_dir and not os.environ.get("BCC_DATA_DIR"):
        raise DemoSetupError(
            f"run config {config_file} names no data_dir and BCC_DATA_DIR is not set: the demo "
            "does not put SYNTHETIC images in the real data's default folder; set either"
        )
    return config, job, DatasetResource(data_dir=data_dir).path


def _dagster_instance() -> dg.DagsterInstance:
    """With DAGSTER_HOME set, the run shows up in that instance's UI afterwards."""
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.ephemeral()
    try:
        return dg.DagsterInstance.get()
    except dg.DagsterInvariantViolationError as err:  # a folder that is not there, say
        raise DemoSetupError(str(err)) from None


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from low to high (no upper bound when high is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, not {value}")
        return value

    return parse


def _path(text: str) -> Path:
    """An argparse type: a path that is not empty (Path("") is the current folder)."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return Path(text)


def _fraction(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bcc-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser("sample-data", help="write a SYNTHETIC dataset, Kaggle layout")
    sample.add_argument("out", type=_path, help="folder to create")
    sample.add_argument("--per-class", type=_int_in(1), default=40, help="images per class (40)")
    sample.add_argument(
        "--size",
        type=_int_in(sample_data.MIN_SIZE, sample_data.MAX_SIZE),
        default=512,
        help=f"image side in pixels, {sample_data.MIN_SIZE} to {sample_data.MAX_SIZE} (512)",
    )
    sample.add_argument("--seed", type=_int_in(0), default=0, help="generator seed, 0 or more (0)")
    sample.set_defaults(run=_sample_data)

    predict = commands.add_parser("predict", help="classify images; one JSON line per image")
    predict.add_argument(
        "--checkpoint",
        required=True,
        type=_path,
        help="model.pt from a run, or production_model's pointer (current.json)",
    )
    predict.add_argument("images", nargs="+", type=_path, help="image files")
    predict.add_argument(
        "--uncertain-below",
        type=_fraction,
        default=UNCERTAIN_BELOW,
        metavar="P",
        help="mark a prediction uncertain when its calibrated top probability is below P "
        f"({UNCERTAIN_BELOW})",
    )
    predict.add_argument(
        "--explain",
        type=_path,
        metavar="DIR",
        help="also write an explanation map (where the model looked) per image into DIR",
    )
    predict.set_defaults(run=_predict)

    demo = commands.add_parser("demo", help="sample data + training_job on the CPU, offline")
    demo.add_argument("--config", type=_path, default=DEMO_CONFIG, help="run config (demo.yaml)")
    demo.add_argument(
        "--per-class", type=_int_in(1), default=600, help="sample images per class (600)"
    )
    demo.add_argument(
        "--verbose", action="store_true", help="print every Dagster event and stack trace"
    )
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    # `kill` stops a command as Ctrl-C does: what it leaves half done (a sample) is removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:  # the reader has gone (`| head -1`): stop quietly, as Unix tools do
        # The flush at exit would fail again, with a traceback: the Python docs' recipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
