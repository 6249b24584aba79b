"""The promotion gate: whether a retrained model (the challenger) replaces the model in use
(the champion). Two accuracies measured on different images differ by chance as much as by
skill, so both models are scored on the same test images, leaving out every image the champion
trained or validated on, and compared pairwise (see comparison.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bcc_pipeline.data.split import split_fingerprint
from bcc_pipeline.data.tensors import TensorSplits
from bcc_pipeline.ml.comparison import (
    NOTHING_COMPARED,
    PairedComparison,
    challenger_shortfall,
    compare_paired,
)

if TYPE_CHECKING:
    from bcc_pipeline.ml.devices import TrainerDevice
    from bcc_pipeline.ml.network import ClassifierNet


@dataclass(frozen=True)
class Gate:
    """The thresholds, and where to find the split of an earlier run (for champions saved
    before checkpoints carried the digests of what they had seen)."""

    floor: float
    margin: float
    significance_level: float
    min_images_compared: int
    split_file_of: Callable[[str], Path]


def accuracy_gate(report: dict, floor: float) -> list[str]:
    """Why a report fails the accuracy floor; empty when it passes."""
    if report["accuracy"] < floor:
        return [f"test accuracy {report['accuracy']:.4f} is below the floor {floor:.4f}"]
    return []


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


def _correct_on_test(
    net: ClassifierNet, payload: dict, tensors: TensorSplits, device: TrainerDevice
) -> np.ndarray:
    """Per test image, whether the model predicts its label; in the precision its checkpoint
    records, the one its own report used."""
    from bcc_pipeline.ml.checkpoint import stored_inference_dtype
    from bcc_pipeline.ml.network import predict_logits

    dtype = stored_inference_dtype(payload)
    logits = predict_logits(net, tensors.images("test"), device.torch_device, dtype)
    return logits.argmax(dim=1).numpy() == tensors.labels("test")


def _seen_by(payload: dict, split_file_of: Callable[[str], Path]) -> set[str] | None:
    """Digests of the images a checkpoint trained or validated on; None when unknown."""
    if "seen_sha256" in payload:
        return set(payload["seen_sha256"]["train"]) | set(payload["seen_sha256"]["val"])
    # Checkpoints from before the digests were stored: the split of the run that trained it.
    split_file = split_file_of(str(payload.get("run_id")))
    if not split_file.exists():
        return None
    table = pd.read_parquet(split_file)
    if split_fingerprint(table) != payload.get("split_fingerprint"):
        return None
    return set(table.loc[table["split"] != "test", "sha256"])


def _against_production(
    challenger_predictions: np.ndarray,
    current: dict,
    report: dict,
    tensors: TensorSplits,
    device: TrainerDevice,
    gate: Gate,
) -> tuple[PairedComparison, int, list[str]]:
    """Both models scored on the test images the production model never saw: the comparison,
    how many test images were dropped, and why the new model may not replace production."""
    from bcc_pipeline.ml.checkpoint import CheckpointError, load_classifier

    aside = "move current.json aside to promote this model as the first one"
    try:
        champion_net, champion = load_classifier(current["checkpoint"])
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
    seen = _seen_by(champion, gate.split_file_of)
    if seen is None:
        why = (
            f"it is unknown which images the production model (run {current['run_id']}) "
            "trained on: its checkpoint predates stored training digests and the split file "
            f"of its run is gone; {aside}"
        )
        return NOTHING_COMPARED, 0, [why]
    untouched = ~np.isin(np.array(tensors.digests("test"), dtype=object), list(seen))
    comparison = compare_paired(
        _correct_on_test(champion_net, champion, tensors, device)[untouched],
        (challenger_predictions == tensors.labels("test"))[untouched],
    )
    if comparison.n < gate.min_images_compared:  # said, but no evidence either way
        shortfall = [_too_few_compared(untouched, gate.min_images_compared)]
    else:
        shortfall = challenger_shortfall(comparison, gate.margin, gate.significance_level)
    return comparison, int((~untouched).sum()), shortfall


def _too_few_compared(untouched: np.ndarray, minimum: int) -> str:
    """Why too few test images were left to compare the models on, and what to do."""
    setting = f"resources.quality.config.min_images_compared ({minimum})"
    promote_by_hand = "or move current.json aside to promote this model without a comparison"
    if untouched.all():
        return (
            f"this run's test split holds only {len(untouched)} images, fewer than {setting}: "
            "too few to show the new model is no worse than production. Add images, lower "
            f"min_images_compared, {promote_by_hand}"
        )
    return (
        f"only {int(untouched.sum())} of this run's {len(untouched)} test images are untouched "
        f"by the production model (it trained or validated on the other "
        f"{int((~untouched).sum())}: the split was re-drawn, or the folder shrank), fewer than "
        f"{setting}. Add images, {promote_by_hand}"
    )


def decide(
    report: dict,
    challenger_predictions: np.ndarray,
    current: dict | None,
    tensors: TensorSplits,
    device: TrainerDevice,
    gate: Gate,
) -> Decision:
    """The gate: the accuracy floor on the whole test split, then, when a production model
    exists, the two models on the same test images that the production model never saw. The
    new model's answers are `challenger_predictions` (its report's predicted class per test
    image); the production model is run on the test images here."""
    reasons = accuracy_gate(report, gate.floor)
    if current is None:
        return Decision(
            promoted=not reasons,
            reason="; ".join(reasons) or "first model: it passes the accuracy floor",
            challenger_accuracy=float(report["accuracy"]),
            comparison=NOTHING_COMPARED,
            dropped=0,
        )
    comparison, dropped, shortfall = _against_production(
        challenger_predictions, current, report, tensors, device, gate
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
