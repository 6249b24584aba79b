"""production_model: the model in use, replaced only by a retrained model that is no worse than
it on the same test images, none of which the production model trained on."""

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

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
from bcc_pipeline.checks import accuracy_gate
from bcc_pipeline.data.split import split_fingerprint
from bcc_pipeline.data.tensors import TensorSplits
from bcc_pipeline.errors import ConfigError
from bcc_pipeline.ml.comparison import (
    NOTHING_COMPARED,
    PairedComparison,
    challenger_shortfall,
    compare_paired,
)
from bcc_pipeline.resources import (
    AcceleratorResource,
    ArtifactsResource,
    LaunchChecksResource,
    QualityGatesResource,
    TrackingResource,
)
from bcc_pipeline.storage import atomic_path, write_json, write_text

if TYPE_CHECKING:
    from bcc_pipeline.ml.devices import TrainerDevice

POINTER_FILE = "current.json"
CODE_VERSION = "1"
"""Bump when the promotion rule changes: the UI then marks production_model stale."""
HISTORY_FILE = "history.csv"
"""Every decision, promoted or not, one row each, oldest first."""


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    challenger_accuracy: float
    """On the compared images; on the whole test split when nothing was compared."""
    comparison: PairedComparison
    """Both models on the same images (NOTHING_COMPARED without a production model to score)."""
    dropped: int
    """Test images left out because the production model trained or validated on them."""


def _correct_on_test(checkpoint: str, tensors: TensorSplits, device: "TrainerDevice") -> np.ndarray:
    """Per test image, whether the model predicts its label; in the precision its checkpoint
    records, the one its own report used."""
    from bcc_pipeline.ml.checkpoint import load_classifier, stored_inference_dtype
    from bcc_pipeline.ml.evaluation import predict_logits

    net, payload = load_classifier(checkpoint)
    dtype = stored_inference_dtype(payload)
    logits = predict_logits(net, tensors.images("test"), device.torch_device, dtype)
    return logits.argmax(dim=1).numpy() == tensors.labels("test")


def _seen_by(payload: dict, artifacts: ArtifactsResource) -> set[str] | None:
    """Digests of the images a checkpoint trained or validated on; None when unknown."""
    if "seen_sha256" in payload:
        return set(payload["seen_sha256"]["train"]) | set(payload["seen_sha256"]["val"])
    # Checkpoints from before the digests were stored: the split of the run that trained it.
    split_file = artifacts.path / "stratified_split" / str(payload.get("run_id")) / SPLIT_FILE
    if not split_file.exists():
        return None
    table = pd.read_parquet(split_file)
    if split_fingerprint(table) != payload.get("split_fingerprint"):
        return None
    return set(table.loc[table["split"] != "test", "sha256"])


def _against_production(
    challenger_checkpoint: str,
    current: dict,
    report: dict,
    tensors: TensorSplits,
    device: "TrainerDevice",
    artifacts: ArtifactsResource,
    quality: QualityGatesResource,
) -> tuple[PairedComparison, int, list[str]]:
    """Both models scored on the test images the production model never saw: the comparison,
    how many test images were dropped, and why the new model may not replace production."""
    from bcc_pipeline.ml.checkpoint import CheckpointError, read_checkpoint

    aside = f"move {POINTER_FILE} aside to promote this model as the first one"
    try:
        champion = read_checkpoint(current["checkpoint"])
    except (CheckpointError, FileNotFoundError) as err:
        why = f"the production checkpoint cannot be read ({err}); {aside}"
        return NOTHING_COMPARED, 0, [why]
    if champion["class_names"] != report["class_names"]:
        why = (
            f"classes {report['class_names']} differ from production's "
            f"{champion['class_names']}; if that change is intended, {aside}"
        )
        return NOTHING_COMPARED, 0, [why]
    if champion["image_size"] != tensors.image_size:
        why = (
            f"the production model takes {champion['image_size']} px images, this run's tensors "
            f"are {tensors.image_size} px, so it cannot be scored on them; {aside}"
        )
        return NOTHING_COMPARED, 0, [why]
    seen = _seen_by(champion, artifacts)
    if seen is None:
        why = (
            f"it is unknown which images the production model (run {current['run_id']}) "
            "trained on: its checkpoint predates stored training digests and the split file "
            f"of its run is gone; {aside}"
        )
        return NOTHING_COMPARED, 0, [why]
    untouched = ~np.isin(np.array(tensors.digests("test"), dtype=object), list(seen))
    comparison = compare_paired(
        _correct_on_test(current["checkpoint"], tensors, device)[untouched],
        _correct_on_test(challenger_checkpoint, tensors, device)[untouched],
    )
    shortfall = challenger_shortfall(
        comparison, quality.non_inferiority_margin, quality.significance_level
    )
    return comparison, int((~untouched).sum()), shortfall


def decide(
    report: dict,
    challenger_checkpoint: str,
    current: dict | None,
    tensors: TensorSplits,
    device: "TrainerDevice",
    artifacts: ArtifactsResource,
    quality: QualityGatesResource,
) -> Decision:
    """The gate: the accuracy floor on the whole test split, then, when a production model
    exists, the two models on the same test images that the production model never saw."""
    reasons = accuracy_gate(report, quality.accuracy_floor)
    if current is None:
        return Decision(
            promoted=not reasons,
            reason="; ".join(reasons) or "first model: it passes the accuracy floor",
            challenger_accuracy=float(report["accuracy"]),
            comparison=NOTHING_COMPARED,
            dropped=0,
        )
    comparison, dropped, shortfall = _against_production(
        challenger_checkpoint, current, report, tensors, device, artifacts, quality
    )
    reasons += shortfall
    return Decision(
        promoted=not reasons,
        reason="; ".join(reasons)
        or (
            f"no worse than production (run {current['run_id']}) on the same {comparison.n} "
            f"test images: {comparison.challenger_accuracy:.4f} vs "
            f"{comparison.champion_accuracy:.4f}, exact McNemar p = {comparison.p_value:.4g}"
        ),
        challenger_accuracy=comparison.challenger_accuracy if comparison.n else report["accuracy"],
        comparison=comparison,
        dropped=dropped,
    )


def _read_pointer(pointer: Path) -> dict | None:
    if not pointer.exists():
        return None
    try:
        return json.loads(pointer.read_text())
    except ValueError as err:
        raise dg.Failure(
            f"{pointer} is damaged ({err}): serving code cannot read it either. Restore it, or "
            "move it aside to promote the next model that passes the floor as the first one."
        ) from None


def _append_history(path: Path, row: dict) -> pd.DataFrame:
    """Add one decision to the history file (rewritten whole, atomically) and return it all."""
    line = pd.DataFrame([row]).to_csv(index=False, header=not path.exists())
    write_text(path, (path.read_text() if path.exists() else "") + line)
    return pd.read_csv(path)


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

    folder = artifacts.path / "production_model"
    folder.mkdir(parents=True, exist_ok=True)
    pointer = folder / POINTER_FILE
    report = json.loads(Path(test_metrics_report).read_text())
    tensors = TensorSplits.open(preprocessed_tensors)
    with user_errors(ConfigError):
        device = accelerator.trainer_device()
    # Read, decide and write as one step: two runs finishing together must not both replace
    # the model they read (the OS drops the lock if the process dies).
    mlflow_links: dict = {}
    with FileLock(folder / ".lock"):
        current = _read_pointer(pointer)
        decision = decide(report, vit_checkpoint, current, tensors, device, artifacts, quality)
        champion_run_id = current["run_id"] if current else "none"
        if decision.promoted:
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
            mlflow_links = tracking.register_promoted_model(
                context.run, copy, report, decision.reason
            )
        comparison = decision.comparison
        history = _append_history(
            folder / HISTORY_FILE,
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
        artifacts.run_dir("production_model", context.run.run_id) / "history.png",
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
