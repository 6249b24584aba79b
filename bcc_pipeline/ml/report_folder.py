"""The test report of a checkpoint as a folder: report.json, report.md, the model card, the
figures, explanation maps and the test predictions. Plain Python: test_metrics_report checks
its inputs, calls write_report_folder, and records what it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bcc_pipeline.data.tensors import TensorSplits
from bcc_pipeline.ml.calibration import calibrated_probabilities, reliability_bins
from bcc_pipeline.ml.checkpoint import stored_inference_dtype, stored_temperature
from bcc_pipeline.ml.devices import TrainerDevice
from bcc_pipeline.ml.evaluation import classification_report, report_markdown
from bcc_pipeline.ml.explain import Explainer, ExplanationUnavailableError, explain_examples
from bcc_pipeline.ml.model_card import DataSummary, model_card_markdown
from bcc_pipeline.ml.network import ClassifierNet, predict_logits
from bcc_pipeline.ml.plots import confusion_matrix_plot, per_class_plot, reliability_plot
from bcc_pipeline.storage import atomic_path, write_json, write_text

REPORT_FILE = "report.json"
MODEL_CARD_FILE = "model_card.md"
PREDICTIONS_FILE = "test_predictions.npy"
"""Beside report.json: the predicted class of each test image, in the tensors' order, which
production_model compares with the production model's instead of running the model again."""


@dataclass(frozen=True)
class ReportFolder:
    """What write_report_folder wrote, and what the asset shows of it."""

    report: dict
    report_file: Path
    markdown: str
    """report.md's metrics, without its figure links."""
    figures: dict[str, Path]
    """Each figure by caption."""
    card: str
    card_file: Path
    temperature: float
    inference_dtype: str
    explanation_maps: int
    synthetic: bool | None


def write_report_folder(
    net: ClassifierNet,
    payload: dict,
    tensors: TensorSplits,
    split_table: pd.DataFrame,
    device: TrainerDevice,
    folder: Path,
    provenance: dict,
    warn: Callable[[str], None],
) -> ReportFolder:
    """Evaluate the checkpoint (`net` and its `payload`) on the test split of `tensors` once,
    and write the report folder. `provenance` names where the inputs came from; the backbone,
    split and training run are added from the checkpoint."""
    # The precision the trained part saw its inputs in, recorded in the checkpoint.
    dtype = stored_inference_dtype(payload)
    try:
        explainer = Explainer(net, device.torch_device, dtype)
        net = explainer.network  # one copy of the network in memory: the explainer's
    except ExplanationUnavailableError as err:
        warn(str(err))
        explainer = None
    test_images = tensors.images("test")
    if explainer is None:
        logits, coarse_maps = predict_logits(net, test_images, device.torch_device, dtype), None
    else:  # one forward pass per image for predictions and maps
        logits, coarse_maps = explainer.predict(test_images)
    labels = torch.from_numpy(tensors.labels("test"))
    temperature = stored_temperature(payload)
    paths = tensors.paths("test")
    # The bootstrap resamples whole duplicate groups: the split table names each image's.
    groups = split_table.set_index("path").loc[paths, "group"].tolist()
    report = classification_report(
        logits, labels, tensors.class_names, temperature=temperature, groups=groups
    )
    data = DataSummary.of(split_table)
    report["provenance"] = {
        **provenance,
        "synthetic": data.synthetic,
        "backbone": payload["backbone"]["name"],
        "weights": payload["backbone"]["weights"],
        "model_run_id": payload["run_id"],
        "split_fingerprint": tensors.fingerprint,
    }

    probabilities = calibrated_probabilities(logits, temperature)
    figures = {
        "confusion matrix": confusion_matrix_plot(report, folder / "confusion_matrix.png"),
        "per-class scores": per_class_plot(report, folder / "per_class.png"),
        "reliability diagram": reliability_plot(
            reliability_bins(calibrated_probabilities(logits, 1.0), labels),
            reliability_bins(probabilities, labels),
            report,
            folder / "reliability.png",
        ),
    }
    method, n_maps = None, 0
    if explainer is not None:
        explanations = explain_examples(
            explainer,
            test_images,
            labels.numpy(),
            probabilities,
            tensors.class_names,
            paths,
            folder,
            coarse_maps,
        )
        figures[f"explanation maps ({explanations.method})"] = explanations.grid
        method, n_maps = explanations.method, len(explanations.files)
    card = model_card_markdown(report, payload, data, method)
    card_file = write_text(folder / MODEL_CARD_FILE, card)

    precision = str(dtype).removeprefix("torch.")
    markdown = report_markdown(
        report, f"Test metrics ({precision} inference on {device.accelerator})"
    )
    linked = "".join(f"\n![{caption}]({path.name})\n" for caption, path in figures.items())
    write_text(
        folder / "report.md",
        f"{markdown}{linked}\nModel card: [{card_file.name}]({card_file.name})\n",
    )
    with atomic_path(folder / PREDICTIONS_FILE) as tmp, tmp.open("wb") as handle:
        np.save(handle, logits.argmax(dim=1).numpy())
    return ReportFolder(
        report=report,
        report_file=write_json(folder / REPORT_FILE, report),
        markdown=markdown,
        figures=figures,
        card=card,
        card_file=card_file,
        temperature=temperature,
        inference_dtype=precision,
        explanation_maps=n_maps,
        synthetic=data.synthetic,
    )
