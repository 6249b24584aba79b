"""test_metrics_report: the checkpoint evaluated once, on the test split only."""

import dagster as dg

from bcc_pipeline.assets.common import (
    GROUP,
    artifact_metadata,
    markdown_image,
    user_errors,
)
from bcc_pipeline.errors import ConfigError
from bcc_pipeline.resources import (
    AcceleratorResource,
    ArtifactsResource,
    DatasetResource,
    LaunchChecksResource,
    TrackingResource,
)
from bcc_pipeline.storage import atomic_path, write_json, write_text

REPORT_FILE = "report.json"
MODEL_CARD_FILE = "model_card.md"
PREDICTIONS_FILE = "test_predictions.npy"
"""Beside report.json: the predicted class of each test image, in the tensors' order, which
production_model compares with the production model's instead of running the model again."""
CODE_VERSION = "4"
"""Bump when the evaluation logic changes: the UI then marks the report and what follows stale."""


def _rounded(value: float | None) -> float:
    return float("nan") if value is None else round(value, 4)


@dg.asset(
    group_name=GROUP,
    kinds={"pytorch", "json"},
    code_version=CODE_VERSION,
    description=(
        "Test-split evaluation of vit_checkpoint: accuracy with a 95% Wilson interval, loss, "
        "per-class precision/recall/F1, sensitivity and specificity with Wilson intervals, "
        "one-vs-rest AUROC, macro AUROC with a bootstrap interval over duplicate groups, "
        "calibration (ECE before and after temperature scaling, reliability diagram), "
        "explanation maps and a model card, as report.json, report.md, model_card.md and PNGs."
    ),
)
def test_metrics_report(
    context: dg.AssetExecutionContext,
    launch_checks: LaunchChecksResource,
    accelerator: AcceleratorResource,
    artifacts: ArtifactsResource,
    dataset: DatasetResource,
    tracking: TrackingResource,
    vit_checkpoint: str,
    preprocessed_tensors: str,
    stratified_split: str,
) -> dg.Output[str]:
    import numpy as np
    import pandas as pd
    import torch

    from bcc_pipeline.data.split import split_fingerprint
    from bcc_pipeline.data.tensors import TensorSplits
    from bcc_pipeline.ml.calibration import calibrated_probabilities, reliability_bins
    from bcc_pipeline.ml.checkpoint import (
        load_classifier,
        stored_inference_dtype,
        stored_temperature,
    )
    from bcc_pipeline.ml.evaluation import classification_report, report_markdown
    from bcc_pipeline.ml.explain import Explainer, ExplanationUnavailableError, explain_examples
    from bcc_pipeline.ml.model_card import DataSummary, model_card_markdown
    from bcc_pipeline.ml.network import predict_logits
    from bcc_pipeline.ml.plots import confusion_matrix_plot, per_class_plot, reliability_plot

    tensors = TensorSplits.open(preprocessed_tensors)
    net, payload = load_classifier(vit_checkpoint)
    if payload["split_fingerprint"] != tensors.fingerprint:
        raise dg.Failure(
            f"checkpoint was trained on split {payload['split_fingerprint']}, but the tensors "
            f"are of split {tensors.fingerprint}: evaluating it here would leak training images"
        )
    if payload["image_size"] != tensors.image_size:
        raise dg.Failure(
            f"checkpoint takes {payload['image_size']} px images, but the tensors are "
            f"{tensors.image_size} px (materialized apart): re-materialize preprocessed_tensors "
            f"at image_size {payload['image_size']}, or vit_checkpoint on these tensors"
        )
    table = pd.read_parquet(stratified_split)
    if split_fingerprint(table) != tensors.fingerprint:
        raise dg.Failure(
            f"the split table is split {split_fingerprint(table)}, but the tensors are of split "
            f"{tensors.fingerprint}: re-materialize preprocessed_tensors"
        )
    with user_errors(ConfigError):
        device = accelerator.trainer_device()
    # The precision the trained part saw its inputs in, recorded in the checkpoint.
    dtype = stored_inference_dtype(payload)
    try:
        explainer = Explainer(net, device.torch_device, dtype)
        net = explainer.network  # one copy of the network in memory: the explainer's
    except ExplanationUnavailableError as err:
        context.log.warning(str(err))
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
    groups = table.set_index("path").loc[paths, "group"].tolist()
    report = classification_report(
        logits, labels, tensors.class_names, temperature=temperature, groups=groups
    )
    data = DataSummary.of(table)
    report["provenance"] = {
        "data_dir": str(dataset.path.resolve()),
        "synthetic": data.synthetic,
        "backbone": payload["backbone"]["name"],
        "weights": payload["backbone"]["weights"],
        "checkpoint": vit_checkpoint,
        "model_run_id": payload["run_id"],
        "run_id": context.run.run_id,
        "split_fingerprint": tensors.fingerprint,
    }

    folder = artifacts.run_dir("test_metrics_report", context.run.run_id)
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
    card_path = write_text(folder / MODEL_CARD_FILE, card)

    precision = str(dtype).removeprefix("torch.")
    markdown = report_markdown(
        report, f"Test metrics ({precision} inference on {device.accelerator})"
    )
    linked = "".join(f"\n![{caption}]({path.name})\n" for caption, path in figures.items())
    write_text(
        folder / "report.md",
        f"{markdown}{linked}\nModel card: [{card_path.name}]({card_path.name})\n",
    )
    with atomic_path(folder / PREDICTIONS_FILE) as tmp, tmp.open("wb") as handle:
        np.save(handle, logits.argmax(dim=1).numpy())
    path = write_json(folder / REPORT_FILE, report)
    low, high = report["accuracy_ci95"]
    context.log.info(
        f"test accuracy {report['accuracy']:.4f} (95% CI {low:.3f}-{high:.3f}, "
        f"n={report['n_test']}), macro F1 {report['macro_f1']:.4f}, macro AUROC "
        f"{_rounded(report['macro_auroc'])}, ECE {report['ece']:.4f} (T = {temperature:.3f})"
    )
    mlflow_links = tracking.log_evaluation(context.run, report, folder)
    inline_figures = "\n\n".join(
        markdown_image(figure, caption) for caption, figure in figures.items()
    )
    auroc_low, auroc_high = report["macro_auroc_ci95"] or (None, None)
    return dg.Output(
        str(path),
        metadata={
            **artifact_metadata(path),
            "accuracy": round(report["accuracy"], 4),
            "accuracy_ci95_low": round(low, 4),
            "accuracy_ci95_high": round(high, 4),
            "macro_f1": round(report["macro_f1"], 4),
            "loss": round(report["loss"], 4),
            "n_test": report["n_test"],
            "macro_auroc": _rounded(report["macro_auroc"]),
            "macro_auroc_ci95_low": _rounded(auroc_low),
            "macro_auroc_ci95_high": _rounded(auroc_high),
            "ece": round(report["ece"], 4),
            "ece_uncalibrated": round(report["ece_uncalibrated"], 4),
            "temperature": round(temperature, 4),
            "synthetic": "not recorded" if data.synthetic is None else data.synthetic,
            "explanation_maps": n_maps,
            "report": dg.MetadataValue.md(markdown + "\n" + inline_figures),
            "report_md": dg.MetadataValue.path(str(folder / "report.md")),
            "model_card": dg.MetadataValue.md(card),
            "model_card_md": dg.MetadataValue.path(str(card_path)),
            "inference_dtype": precision,
            **mlflow_links,
        },
    )
