"""production_model: the model in use, replaced only by a retrained model that is no worse than
it on the same test images, none of which the production model trained on."""

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from bcc_pipeline.assets.common import (
    GROUP,
    artifact_metadata,
    markdown_image,
    markdown_table,
    user_errors,
)
from bcc_pipeline.assets.split import SPLIT_FILE
from bcc_pipeline.data.tensors import TensorSplits
from bcc_pipeline.errors import ConfigError
from bcc_pipeline.ml.promotion import Gate, decide
from bcc_pipeline.resources import (
    AcceleratorResource,
    ArtifactsResource,
    LaunchChecksResource,
    QualityGatesResource,
    TrackingResource,
)
from bcc_pipeline.storage import atomic_path, write_json, write_text

POINTER_FILE = "current.json"
CODE_VERSION = "1"
"""Bump when the promotion rule changes: the UI then marks production_model stale."""
HISTORY_FILE = "history.csv"
"""Every decision, promoted or not, one row each, oldest first."""
HISTORY_PLOTTED = ("promoted", "champion_accuracy", "challenger_accuracy")
"""The history's columns that its plot reads."""


def _read_pointer(pointer: Path) -> dict | None:
    """The production pointer, its checkpoint path made absolute as predict reads it (relative
    to the pointer: a hand-written rollback may say `<run_id>/model.pt`)."""
    if not pointer.exists():
        return None
    aside = "move it aside to promote the next model that passes the floor as the first one"
    try:
        current = json.loads(pointer.read_text())
    except ValueError as err:
        raise dg.Failure(
            f"{pointer} is damaged ({err}): serving code cannot read it either. Restore it, or "
            f"{aside}."
        ) from None
    if not isinstance(current, dict) or not all(
        isinstance(current.get(key), str) for key in ("checkpoint", "run_id")
    ):
        raise dg.Failure(
            f'{pointer} is not a production pointer: it needs "checkpoint" (the model file) and '
            f'"run_id" (the run that trained it), as production_model writes them. Fix it, or '
            f"{aside}."
        )
    return {**current, "checkpoint": str(pointer.parent / current["checkpoint"])}


def _read_history(path: Path) -> pd.DataFrame:
    """The decisions so far. Read before deciding: a damaged file stops the run before a model
    is promoted, rather than after, when the decision could no longer be recorded."""
    if not path.exists():
        return pd.DataFrame()
    try:
        history = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as err:  # pandas' parser errors are ValueErrors
        problem = f"cannot be read as CSV ({type(err).__name__}: {err})"
    else:
        missing = [column for column in HISTORY_PLOTTED if column not in history.columns]
        if not missing:
            return history
        problem = f"has no column {', '.join(missing)}"
    raise dg.Failure(
        f"{path} is damaged: it {problem}. Nothing was promoted. Restore it, or move it aside "
        "to start a new history."
    )


def _require_one_lineage(report: dict, checkpoint: str, tensors: TensorSplits) -> None:
    """The report must have evaluated this checkpoint on these tensors' test images: assets
    materialized apart (a new vit_checkpoint alone, say) would otherwise promote a model on
    another model's numbers, or score predictions against other images' labels."""
    provenance = report.get("provenance") or {}
    if provenance.get("checkpoint") != checkpoint:
        raise dg.Failure(
            f"the report evaluated checkpoint {provenance.get('checkpoint')}, not "
            f"{checkpoint}: re-materialize test_metrics_report"
        )
    if provenance.get("split_fingerprint") != tensors.fingerprint:
        raise dg.Failure(
            f"the report scored the test images of split {provenance.get('split_fingerprint')}, "
            f"the tensors are of split {tensors.fingerprint}: re-materialize test_metrics_report"
        )


def _append_history(path: Path, history: pd.DataFrame, row: dict) -> pd.DataFrame:
    """`history` with one more decision, written whole and atomically."""
    history = pd.concat([history, pd.DataFrame([row])], ignore_index=True)
    write_text(path, history.to_csv(index=False))
    return history


@dg.asset(
    group_name=GROUP,
    kinds={"pytorch", "json"},
    code_version=CODE_VERSION,
    description=(
        "Pointer to the model in use (current.json: checkpoint copy, metrics, run id). A new "
        "model replaces it if it passes the accuracy floor and, scored with the production "
        "model on the same test images that model never trained on, is no worse by more than "
        "the margin and not significantly worse (exact McNemar). Every decision is appended "
        "to history.csv beside it."
    ),
)
def production_model(
    context: dg.AssetExecutionContext,
    launch_checks: LaunchChecksResource,
    artifacts: ArtifactsResource,
    quality: QualityGatesResource,
    accelerator: AcceleratorResource,
    tracking: TrackingResource,
    vit_checkpoint: str,
    test_metrics_report: str,
    preprocessed_tensors: str,
) -> dg.Output[str]:
    from filelock import FileLock

    from bcc_pipeline.ml.plots import promotion_history_plot
    from bcc_pipeline.ml.report_folder import PREDICTIONS_FILE
    from bcc_pipeline.ml.trained_checkpoint import CHECKPOINT_FILE

    folder = artifacts.path / "production_model"
    folder.mkdir(parents=True, exist_ok=True)
    pointer = folder / POINTER_FILE
    report = json.loads(Path(test_metrics_report).read_text())
    tensors = TensorSplits.open(preprocessed_tensors)
    predictions_file = Path(test_metrics_report).with_name(PREDICTIONS_FILE)
    if not predictions_file.exists():
        raise dg.Failure(
            f"{predictions_file} is missing (a report from an older version): re-materialize "
            "test_metrics_report"
        )
    _require_one_lineage(report, vit_checkpoint, tensors)
    predictions = np.load(predictions_file)
    if len(predictions) != len(tensors.labels("test")):
        raise dg.Failure(
            f"the report scored {len(predictions)} test images, the tensors hold "
            f"{len(tensors.labels('test'))}: re-materialize test_metrics_report"
        )
    with user_errors(ConfigError):
        device = accelerator.trainer_device()
    # Read, decide and write as one step: two runs finishing together must not both replace
    # the model they read (the OS drops the lock if the process dies).
    run_folder = artifacts.run_dir("production_model", context.run.run_id)
    mlflow_links: dict = {}
    with FileLock(folder / ".lock"):
        current = _read_pointer(pointer)
        history = _read_history(folder / HISTORY_FILE)
        gate = Gate(
            floor=quality.accuracy_floor,
            margin=quality.non_inferiority_margin,
            significance_level=quality.significance_level,
            min_images_compared=quality.min_images_compared,
            split_file_of=lambda run_id: artifacts.path / "stratified_split" / run_id / SPLIT_FILE,
        )
        decision = decide(report, predictions, current, tensors, device, gate)
        champion_run_id = current["run_id"] if current else "none"
        if decision.promoted:
            copy = run_folder / CHECKPOINT_FILE
            with atomic_path(copy) as tmp:
                shutil.copyfile(vit_checkpoint, tmp)
            current = {
                "checkpoint": str(copy),
                "source_checkpoint": vit_checkpoint,
                "report": test_metrics_report,
                "run_id": context.run.run_id,
                "accuracy": report["accuracy"],
                "macro_f1": report["macro_f1"],
                "class_names": report["class_names"],
                "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            write_json(pointer, current)
            mlflow_links = tracking.register_promoted_model(
                context.run, copy, report, decision.reason
            )
        comparison = decision.comparison
        history = _append_history(
            folder / HISTORY_FILE,
            history,
            {
                "decided_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "run_id": context.run.run_id,
                "promoted": decision.promoted,
                "champion_run_id": champion_run_id,
                "champion_accuracy": comparison.champion_accuracy,
                "challenger_accuracy": decision.challenger_accuracy,
                "n_compared": comparison.n,
                "dropped_seen_by_champion": decision.dropped,
                **comparison.discordant,
                "p_value": comparison.p_value,
                "challenger_test_accuracy": report["accuracy"],
                "n_test": report["n_test"],
                "reason": decision.reason,
            },
        )
    log = context.log.info if decision.promoted else context.log.warning
    log(("promoted: " if decision.promoted else "kept the production model: ") + decision.reason)
    plot = promotion_history_plot(
        history,
        run_folder / "history.png",
        quality.accuracy_floor,
    )
    production = current or {}
    return dg.Output(
        str(pointer),
        metadata={
            **artifact_metadata(pointer),
            "promoted": decision.promoted,
            "reason": decision.reason,
            "champion_accuracy": comparison.champion_accuracy,
            "challenger_accuracy": decision.challenger_accuracy,
            "n_compared": comparison.n,
            "discordant": dg.MetadataValue.json(comparison.discordant),
            "p_value": comparison.p_value,
            "dropped_seen_by_champion": decision.dropped,
            "champion_run_id": champion_run_id,
            "production_run_id": production.get("run_id", "none yet"),
            "production_checkpoint": dg.MetadataValue.path(production.get("checkpoint", "")),
            "history": markdown_table(history.iloc[::-1]),
            "history_plot": dg.MetadataValue.md(markdown_image(plot, "accuracy over retrains")),
            "history_file": dg.MetadataValue.path(str(folder / HISTORY_FILE)),
            **mlflow_links,
        },
    )
