"""Test-set evaluation with torchmetrics: honest intervals on accuracy, sensitivity,
specificity and AUROC, calibration, and the report."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import binomtest, bootstrap
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassSpecificity,
    MulticlassStatScores,
)
from torchmetrics.functional.classification import multiclass_auroc

from bcc_pipeline.markdown import markdown_text
from bcc_pipeline.ml.calibration import calibrated_probabilities, expected_calibration_error

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
BOOTSTRAP_BATCH_VALUES = 4_000_000
"""Resamples x test images scored together: bounds the bootstrap's memory at any test size."""


def wilson_interval(successes: int, total: int) -> tuple[float, float]:
    """95% Wilson score interval: sound at small n and near 0 or 1, unlike the normal one."""
    if total == 0:
        return (0.0, 1.0)
    interval = binomtest(successes, total).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(interval.low), float(interval.high))


def auroc_per_class(probabilities: torch.Tensor, labels: torch.Tensor) -> list[float | None]:
    """One-vs-rest AUROC of each class's probability; None where the labels hold no positive
    or no negative of the class (torchmetrics would say 0 there, which reads as a result)."""
    n = probabilities.shape[1]
    counts = torch.bincount(labels, minlength=n)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No (positive|negative) samples in targets")
        values = multiclass_auroc(probabilities, labels, n, average=None)
    return [float(v) if 0 < counts[i] < len(labels) else None for i, v in enumerate(values)]


def macro_auroc(probabilities: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Mean one-vs-rest AUROC over the classes where it is defined."""
    defined = [v for v in auroc_per_class(probabilities, labels) if v is not None]
    return float(np.mean(defined)) if defined else None


def weighted_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One-vs-rest AUROC of one class for each row of `weights` (how many times each image
    counts): the probability that a positive image outscores a negative one, ties counting
    half, which is the area under the ROC curve that torchmetrics integrates. NaN for a row
    without a positive or a negative. One sort serves every row: the bootstrap's resamples at
    once, instead of one torchmetrics call per resample."""
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    ties = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])  # first of each score
    counts = weights[:, order].astype(np.float64)
    positives = np.add.reduceat(counts * positive[order], ties, axis=1)
    negatives = np.add.reduceat(counts * ~positive[order], ties, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    wins = (positives * (below + 0.5 * negatives)).sum(axis=1)
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


def macro_auroc_interval(
    probabilities: torch.Tensor,
    labels: torch.Tensor,
    groups: Sequence[str],
    seed: int = BOOTSTRAP_SEED,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> tuple[float, float] | None:
    """95% percentile interval of the macro AUROC from a bootstrap over duplicate groups,
    stratified by class as the split was: each resample draws every class's groups with
    replacement, and a drawn group brings all its images, so near-identical slices count as
    one draw and cannot make the interval look narrower than the evidence is. A class with a
    single group is kept as it is in every resample. None where the AUROC is undefined, or
    where no class has two groups (every resample would be the test split itself).
    scipy draws the resamples; each becomes a weight per image (how often its group was
    drawn), and weighted_auroc scores them all together."""
    point = macro_auroc(probabilities, labels)
    if point is None:
        return None
    frame = pd.DataFrame({"label": labels.numpy(), "group": list(groups)})
    clusters = frame.groupby(["label", "group"], sort=True)
    cluster_of_image = clusters.ngroup().to_numpy()
    cluster_labels = clusters["label"].first().to_numpy()  # in ngroup's order
    per_class = [np.flatnonzero(cluster_labels == label) for label in np.unique(cluster_labels)]
    drawn = tuple(ids for ids in per_class if len(ids) > 1)
    if not drawn:
        return None  # no class has two groups to draw from: the data give no interval
    fixed = np.zeros(len(cluster_labels))
    fixed[[ids[0] for ids in per_class if len(ids) == 1]] = 1
    scores = probabilities.double().numpy()
    truth = labels.numpy()

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        batch = samples[0].shape[:-1]
        resampled = int(np.prod(batch))
        offsets = np.arange(resampled)[:, None] * len(fixed)
        times_drawn = np.tile(fixed, (resampled, 1))
        for sample in samples:
            cells = (sample.reshape(resampled, -1) + offsets).ravel()
            times_drawn += np.bincount(cells, minlength=times_drawn.size).reshape(resampled, -1)
        weights = times_drawn[:, cluster_of_image]
        per_class_auroc = [
            weighted_auroc(scores[:, c], truth == c, weights) for c in range(scores.shape[1])
        ]
        return np.nanmean(per_class_auroc, axis=0).reshape(batch)

    result = bootstrap(
        drawn,
        statistic,
        n_resamples=resamples,
        vectorized=True,
        batch=max(1, BOOTSTRAP_BATCH_VALUES // len(labels)),
        paired=False,
        method="percentile",
        confidence_level=0.95,
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return (float(interval.low), float(interval.high))


def classification_report(
    logits: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    *,
    temperature: float = 1.0,
    groups: Sequence[str] | None = None,
) -> dict:
    """report.json content (its keys are a contract: other people's scripts read them); rows
    of the confusion matrix are the true class. AUROC and ECE use the probabilities calibrated
    with `temperature`; predictions (the argmax) do not depend on it, nor does `loss`, the
    model's own cross-entropy as in training. `groups` names each image's duplicate group for
    the AUROC interval (None: every image is its own)."""
    n = len(class_names)
    predictions = logits.argmax(dim=1)
    accuracy = float(MulticlassAccuracy(n, average="micro")(predictions, labels))
    correct = int((predictions == labels).sum())
    precision = MulticlassPrecision(n, average=None, zero_division=0)(predictions, labels)
    recall = MulticlassRecall(n, average=None, zero_division=0)(predictions, labels)
    specificity = MulticlassSpecificity(n, average=None, zero_division=0)(predictions, labels)
    f1 = MulticlassF1Score(n, average=None, zero_division=0)(predictions, labels)
    macro_f1 = float(MulticlassF1Score(n, average="macro", zero_division=0)(predictions, labels))
    confusion = MulticlassConfusionMatrix(n)(predictions, labels)
    # Per class: true positives, false positives, true negatives, false negatives, support.
    counts = MulticlassStatScores(n, average=None)(predictions, labels).tolist()
    probabilities = calibrated_probabilities(logits, temperature)
    auroc = auroc_per_class(probabilities, labels)
    groups = [str(i) for i in range(len(labels))] if groups is None else list(groups)
    interval = macro_auroc_interval(probabilities, labels, groups)
    return {
        "accuracy": accuracy,
        "accuracy_ci95": list(wilson_interval(correct, len(labels))),
        "loss": float(F.cross_entropy(logits, labels)) if len(labels) else float("nan"),
        "macro_f1": macro_f1,
        "class_names": list(class_names),
        "per_class": {
            name: {
                "precision": _defined(precision[i], tp + fp),
                "recall": _defined(recall[i], tp + fn),
                "f1": _defined(f1[i], tp + fp + fn),
                "support": counts[i][4],
                "auroc": auroc[i],
                "sensitivity": _defined(recall[i], tp + fn),
                "specificity": _defined(specificity[i], tn + fp),
                "sensitivity_ci95": list(wilson_interval(tp, tp + fn)) if tp + fn else None,
                "specificity_ci95": list(wilson_interval(tn, tn + fp)) if tn + fp else None,
            }
            for i, (name, (tp, fp, tn, fn, _)) in enumerate(zip(class_names, counts, strict=True))
        },
        "confusion_matrix": confusion.tolist(),
        "n_test": len(labels),
        "macro_auroc": macro_auroc(probabilities, labels),
        "macro_auroc_ci95": list(interval) if interval else None,
        "ece": expected_calibration_error(probabilities, labels),
        "ece_uncalibrated": expected_calibration_error(
            calibrated_probabilities(logits, 1.0), labels
        ),
        "temperature": float(temperature),
    }


def _defined(value: torch.Tensor, denominator: int) -> float | None:
    """A rate, or None where its denominator is 0: torchmetrics says 0 there (a sensitivity
    of 0 for a class with no test image), which reads as a result."""
    return float(value) if denominator else None


def _interval(values: Sequence[float] | None) -> str:
    return f"{values[0]:.3f} to {values[1]:.3f}" if values else "n/a"


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def report_markdown(report: dict, title: str = "Test metrics") -> str:
    """Human-readable report.md: what it is about, headline with intervals, calibration,
    per-class table, confusion matrix."""
    lines = [f"# {title}", ""]
    provenance = report.get("provenance")
    if provenance:
        lines += [*provenance_lines(provenance), ""]
    lines += [*headline_lines(report), "", *per_class_table(report)]
    names = report["class_names"]
    lines += [
        "",
        "Confusion matrix (rows = true class, columns = predicted):",
        "",
        "| true \\ predicted | " + " | ".join(map(markdown_text, names)) + " |",
        "| --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for name, row in zip(names, report["confusion_matrix"], strict=True):
        lines.append(f"| {markdown_text(name)} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def provenance_lines(provenance: dict) -> list[str]:
    """What a report or card is about, as markdown bullets. The data folder and the weights
    (which may be a file) are the user's names: escaped text, not code spans, in which no
    escape works."""
    data = {True: " (**SYNTHETIC** images from bcc_pipeline's generator)", False: ""}
    return [
        f"- data: {markdown_text(provenance['data_dir'])}"
        + data.get(provenance["synthetic"], " (whether it is synthetic is not recorded)"),
        f"- model: `{provenance['backbone']}`, weights {markdown_text(provenance['weights'])}, "
        "trained in "
        f"run `{provenance['model_run_id']}`, evaluated in run `{provenance['run_id']}`",
        f"- split fingerprint: `{provenance['split_fingerprint']}`",
    ]


def headline_lines(report: dict) -> list[str]:
    """Accuracy, macro F1, macro AUROC with their intervals, calibration and loss."""
    low, high = report["accuracy_ci95"]
    absent = [name for name, scores in report["per_class"].items() if not scores["support"]]
    averaged = [name for name, scores in report["per_class"].items() if scores["f1"] is not None]
    over = (
        f" (over {len(averaged)} of {len(report['per_class'])} classes: "
        f"{', '.join(map(markdown_text, averaged))})"
        if len(averaged) < len(report["per_class"])
        else ""
    )
    lines = [
        f"- accuracy: **{report['accuracy']:.4f}** (95% Wilson CI {low:.4f} to {high:.4f}, "
        f"n_test = {report['n_test']})",
        f"- macro F1: **{report['macro_f1']:.4f}**{over}",
        f"- macro AUROC: **{_number(report['macro_auroc'], 4)}** (95% CI "
        f"{_interval(report['macro_auroc_ci95'])}, bootstrap over duplicate groups)",
        f"- calibration: ECE {report['ece']:.4f} after temperature scaling (T = "
        f"{report['temperature']:.3f}, fitted on val), {report['ece_uncalibrated']:.4f} before",
        f"- cross-entropy loss: {report['loss']:.4f}",
    ]
    if absent:
        its, it = ("its", "it") if len(absent) == 1 else ("their", "them")
        lines.append(
            f"- **no test image of {', '.join(map(markdown_text, absent))}**: "
            f"{its} rates are n/a and the macro scores leave {it} out"
        )
    return lines


def per_class_table(report: dict) -> list[str]:
    """The per-class markdown table: each rate with its 95% Wilson interval; class names
    escaped (see markdown_text)."""
    lines = [
        "| class | precision | sensitivity (recall), 95% CI | specificity, 95% CI | F1 "
        "| AUROC | support |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, scores in report["per_class"].items():
        lines.append(
            f"| {markdown_text(name)} | {_number(scores['precision'])} | "
            f"{_number(scores['sensitivity'])} ({_interval(scores['sensitivity_ci95'])}) | "
            f"{_number(scores['specificity'])} ({_interval(scores['specificity_ci95'])}) | "
            f"{_number(scores['f1'])} | "
            f"{_number(scores['auroc'])} | {scores['support']} |"
        )
    return lines
