"""PNG figures for the report and the training run. Figures are built with matplotlib's
object API (no pyplot): no backend is chosen, no display is needed, no global state changes.
Text a user chose (class names) reaches a figure only through _user_ticks, drawn as written."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure

from bcc_pipeline.storage import atomic_path

if TYPE_CHECKING:
    from bcc_pipeline.ml.calibration import ReliabilityBins

LITERAL_TEXT = {"parse_math": False, "usetex": False}
"""Text properties that draw a string as written. Without them matplotlib reads a class folder
named `grade $II_$` as mathtext and fails on it, and with TeX on in a user's matplotlibrc any
`_`, `%` or `&` in a name would be TeX."""


def _figure(width: float, height: float, columns: int = 1) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(width, height))
    return figure, [figure.add_subplot(1, columns, index + 1) for index in range(columns)]


def _save(figure: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def _user_ticks(axis: Axis, positions: Sequence[float], names: Sequence[str], **style: Any) -> None:
    """Ticks at `positions` labelled with names a user chose (class folders), drawn literally
    (see LITERAL_TEXT)."""
    axis.set_ticks(positions, [str(name) for name in names], **style, **LITERAL_TEXT)


def confusion_matrix_plot(report: dict, path: Path) -> Path:
    matrix = np.array(report["confusion_matrix"])
    names = report["class_names"]
    figure, (axes,) = _figure(1.6 * len(names) + 2, 1.4 * len(names) + 1.5)
    axes.imshow(matrix, cmap="Blues")
    _user_ticks(axes.xaxis, range(len(names)), names, rotation=30, ha="right")
    _user_ticks(axes.yaxis, range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (row, column), value in np.ndenumerate(matrix):
        colour = "white" if value > matrix.max() / 2 else "black"
        axes.text(column, row, str(value), ha="center", va="center", color=colour)
    axes.set_title(f"Confusion matrix (n_test = {report['n_test']})")
    return _save(figure, path)


def per_class_plot(report: dict, path: Path) -> Path:
    names = report["class_names"]
    metrics = ("precision", "recall", "f1")
    positions = np.arange(len(names))
    figure, (axes,) = _figure(2 * len(names) + 2, 3.5)
    for offset, metric in enumerate(metrics):
        values = [report["per_class"][name][metric] for name in names]
        values = [np.nan if value is None else value for value in values]  # undefined: no bar
        axes.bar(positions + (offset - 1) * 0.27, values, width=0.27, label=metric)
    _user_ticks(axes.xaxis, positions, names)
    axes.set_ylim(0, 1.05)
    # Below the axes, so that the legend never hides a bar.
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(metrics))
    axes.set_title("Per-class scores on the test split")
    return _save(figure, path)


def training_curves_plot(history: pd.DataFrame, path: Path, best_epoch: int) -> Path:
    figure, (loss_axes, acc_axes) = _figure(9, 3.5, columns=2)
    epochs = history["epoch"]
    for stage in ("train", "val"):
        loss_axes.plot(epochs, history[f"{stage}_loss"], marker="o", label=stage)
        acc_axes.plot(epochs, history[f"{stage}_acc"], marker="o", label=stage)
    for axes, title in ((loss_axes, "loss"), (acc_axes, "accuracy")):
        axes.axvline(best_epoch, color="grey", linestyle="--", label="best val_loss")
        axes.set_xlabel("epoch")
        axes.set_title(title)
        axes.legend()
    return _save(figure, path)


def promotion_history_plot(history: pd.DataFrame, path: Path, floor: float) -> Path:
    """Accuracy of each retrained model and of the production model it was compared with (on
    the same images), decision by decision; filled markers were promoted."""
    figure, (axes,) = _figure(max(5.0, 0.5 * len(history) + 3), 3.5)
    decision = np.arange(1, len(history) + 1)
    promoted = history["promoted"].astype(bool).to_numpy()
    axes.plot(decision, history["champion_accuracy"], color="grey", marker="s", label="production")
    axes.plot(decision, history["challenger_accuracy"], color="tab:blue", label="retrained")
    axes.scatter(decision[promoted], history["challenger_accuracy"][promoted], color="tab:blue",
                 zorder=3, label="promoted")  # fmt: skip
    axes.scatter(decision[~promoted], history["challenger_accuracy"][~promoted], zorder=3,
                 facecolors="white", edgecolors="tab:red", label="refused")  # fmt: skip
    axes.axhline(floor, color="tab:red", linestyle="--", linewidth=1, label="floor")
    axes.set_xticks(decision)
    axes.set_xlabel("retrain (decision number)")
    axes.set_ylabel("accuracy on the compared test images")
    axes.set_title("Promotion decisions")
    axes.legend(loc="lower left", fontsize="small")
    return _save(figure, path)


def reliability_plot(
    before: ReliabilityBins, after: ReliabilityBins, report: dict, path: Path
) -> Path:
    """Reliability diagram before and after temperature scaling: per confidence bin, the share
    of correct predictions (bar, with its image count) and the mean confidence (dot); on the
    diagonal a probability means what it says."""
    figure, axes_pair = _figure(9, 4, columns=2)
    titles = (
        f"before: ECE {report['ece_uncalibrated']:.3f}",
        f"after (T = {report['temperature']:.2f}): ECE {report['ece']:.3f}",
    )
    for axes, bins, title in zip(axes_pair, (before, after), titles, strict=True):
        filled = np.flatnonzero(bins.count)
        width = np.diff(bins.edges)
        axes.bar(
            bins.edges[filled],
            bins.accuracy[filled],
            width=width[filled],
            align="edge",
            edgecolor="black",
            label="share correct",
        )
        axes.plot(
            bins.confidence[filled],
            bins.accuracy[filled],
            "o",
            color="tab:red",
            label="mean confidence",
        )
        for index in filled:
            centre = bins.edges[index] + width[index] / 2
            axes.text(
                centre, bins.accuracy[index] + 0.02, str(bins.count[index]), ha="center", fontsize=7
            )
        axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.1)
        axes.set_xlabel("top-class probability")
        axes.set_ylabel("share correct")
        axes.set_title(title)
        axes.legend(loc="upper left", fontsize=8)
    return _save(figure, path)
