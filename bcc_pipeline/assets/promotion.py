"""production_model: the model in use, replaced only by a retrained model that is no worse."""

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from bcc_pipeline.assets.common import GROUP, artifact_metadata
from bcc_pipeline.checks import accuracy_gate
from bcc_pipeline.resources import (
    ArtifactsResource,
    LaunchChecksResource,
    QualityGatesResource,
    TrackingResource,
)
from bcc_pipeline.storage import atomic_path, write_json

POINTER_FILE = "current.json"
CODE_VERSION = "1"
"""Bump when the promotion rule changes: the UI then marks production_model stale."""
PROMOTED_REASON = "passed the gate and is no worse than production"


def promotion_refusals(report: dict, current: dict | None, floor: float) -> list[str]:
    """Reasons to keep the current model; an empty list promotes the candidate."""
    reasons = accuracy_gate(report, floor)
    if current is not None:
        if report["class_names"] != current["class_names"]:
            reasons.append(
                f"classes {report['class_names']} differ from production's {current['class_names']}"
            )
        if report["accuracy"] < current["accuracy"]:
            reasons.append(
                f"test accuracy {report['accuracy']:.4f} is below production's "
                f"{current['accuracy']:.4f} (run {current['run_id']})"
            )
    return reasons


@dg.asset(
    group_name=GROUP,
    kinds={"pytorch", "json"},
    code_version=CODE_VERSION,
    description=(
        "Pointer to the model in use (current.json: checkpoint copy, metrics, run id). A new "
        "model replaces it only if it passes the accuracy floor and is not worse on test "
        "accuracy than the current one; otherwise the reasons are recorded here."
    ),
)
def production_model(
    context: dg.AssetExecutionContext,
    launch_checks: LaunchChecksResource,
    artifacts: ArtifactsResource,
    quality: QualityGatesResource,
    tracking: TrackingResource,
    vit_checkpoint: str,
    test_metrics_report: str,
) -> dg.Output[str]:
    pointer = artifacts.path / "production_model" / POINTER_FILE
    current = json.loads(pointer.read_text()) if pointer.exists() else None
    report = json.loads(Path(test_metrics_report).read_text())
    refusals = promotion_refusals(report, current, quality.accuracy_floor)
    mlflow_links = {}
    if refusals:
        context.log.warning("kept the production model: " + "; ".join(refusals))
    else:
        copy = artifacts.run_dir("production_model", context.run.run_id) / "model.pt"
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
        mlflow_links = tracking.register_promoted_model(context.run, copy, report, PROMOTED_REASON)
        context.log.info(f"promoted run {context.run.run_id} (accuracy {report['accuracy']:.4f})")
    production = current or {}
    return dg.Output(
        str(pointer),
        metadata={
            **artifact_metadata(pointer),
            "promoted": not refusals,
            "reason": "; ".join(refusals) or PROMOTED_REASON,
            "candidate_accuracy": report["accuracy"],
            "production_accuracy": production.get("accuracy", float("nan")),
            "production_run_id": production.get("run_id", "none yet"),
            "production_checkpoint": dg.MetadataValue.path(production.get("checkpoint", "")),
            **mlflow_links,
        },
    )
