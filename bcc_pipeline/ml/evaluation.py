"""Test-set evaluation with torchmetrics, an honest interval on accuracy, and its report."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import binomtest
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from bcc_pipeline.data.tensors import MappedArray
from bcc_pipeline.ml.network import ClassifierNet, inference_copy


@torch.inference_mode()
def predict_logits(
    net: ClassifierNet,
    images: np.ndarray | MappedArray,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    batch_size: int = 64,
) -> torch.Tensor:
    """float32 logits of the whole model for uint8 NCHW images, computed by a copy of `net`
    on `device` with its weights in `dtype`."""
    net = inference_copy(net, device, dtype)
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start : start + batch_size]))
        outputs.append(net(batch.to(device)).float().cpu())
    return torch.cat(outputs) if outputs else torch.empty(0, net.head.out_features)


def wilson_interval(successes: int, total: int) -> tuple[float, float]:
    """95% Wilson score interval: sound at small n and near 0 or 1, unlike the normal one."""
    if total == 0:
        return (0.0, 1.0)
    interval = binomtest(successes, total).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(interval.low), float(interval.high))


def classification_report(
    logits: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]
) -> dict:
    """report.json content (its keys are a contract: other people's scripts read them); rows
    of the confusion matrix are the true class."""
    n = len(class_names)
    predictions = logits.argmax(dim=1)
    accuracy = float(MulticlassAccuracy(n, average="micro")(predictions, labels))
    correct = int((predictions == labels).sum())
    precision = MulticlassPrecision(n, average=None, zero_division=0)(predictions, labels)
    recall = MulticlassRecall(n, average=None, zero_division=0)(predictions, labels)
    f1 = MulticlassF1Score(n, average=None, zero_division=0)(predictions, labels)
    macro_f1 = float(MulticlassF1Score(n, average="macro", zero_division=0)(predictions, labels))
    confusion = MulticlassConfusionMatrix(n)(predictions, labels)
    support = torch.bincount(labels, minlength=n)
    return {
        "accuracy": accuracy,
        "accuracy_ci95": list(wilson_interval(correct, len(labels))),
        "loss": float(F.cross_entropy(logits, labels)) if len(labels) else float("nan"),
        "macro_f1": macro_f1,
        "class_names": list(class_names),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion.tolist(),
        "n_test": len(labels),
    }


def report_markdown(report: dict, title: str = "Test metrics") -> str:
    """Human-readable report.md: headline, per-class table, confusion matrix."""
    low, high = report["accuracy_ci95"]
    lines = [
        f"# {title}",
        "",
        f"- accuracy: **{report['accuracy']:.4f}** (95% Wilson CI {low:.4f} to {high:.4f}, "
        f"n_test = {report['n_test']})",
        f"- macro F1: **{report['macro_f1']:.4f}**",
        f"- cross-entropy loss: {report['loss']:.4f}",
        "",
        "| class | precision | recall | F1 | support |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, scores in report["per_class"].items():
        lines.append(
            f"| {name} | {scores['precision']:.3f} | {scores['recall']:.3f} | "
            f"{scores['f1']:.3f} | {scores['support']} |"
        )
    names = report["class_names"]
    lines += [
        "",
        "Confusion matrix (rows = true class, columns = predicted):",
        "",
        "| true \\ predicted | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for name, row in zip(names, report["confusion_matrix"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
