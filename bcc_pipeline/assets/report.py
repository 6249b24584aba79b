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
    LaunchChecksResource,
    TrackingResource,
)
from bcc_pipeline.storage import write_json, write_text

REPORT_FILE = "report.json"
CODE_VERSION = "1"
"""Bump when the evaluation logic changes: the UI then marks the report and what follows stale."""


@dg.asset(
    group_name=GROUP,
    kinds={"pytorch", "json"},
    code_version=CODE_VERSION,
    description=(
        "Test-split evaluation of vit_checkpoint: accuracy with a 95% Wilson interval, loss, "
        "per-class precision/recall/F1, macro F1 and the confusion matrix, as report.json, "
        "report.md and PNG plots."
    ),
)
def test_metrics_report(
    context: dg.AssetExecutionContext,
    launch_checks: LaunchChecksResource,
    accelerator: AcceleratorResource,
    artifacts: ArtifactsResource,
    tracking: TrackingResource,
    vit_checkpoint: str,
    preprocessed_tensors: str,
) -> dg.Output[str]:
    import torch

    from bcc_pipeline.data.tensors import TensorSplits
    from bcc_pipeline.ml.checkpoint import load_classifier, stored_inference_dtype
    from bcc_pipeline.ml.evaluation import classification_report, predict_logits, report_markdown
    from bcc_pipeline.ml.plots import confusion_matrix_plot, per_class_plot

    tensors = TensorSplits.open(preprocessed_tensors)
    net, payload = load_classifier(vit_checkpoint)
    if payload["split_fingerprint"] != tensors.fingerprint:
        raise dg.Failure(
            f"checkpoint was trained on split {payload['split_fingerprint']}, but the tensors "
            f"are of split {tensors.fingerprint}: evaluating it here would leak training images"
        )
    with user_errors(ConfigError):
        device = accelerator.trainer_device()
    # The precision the trained part saw its inputs in, recorded in the checkpoint.
    dtype = stored_inference_dtype(payload)
    logits = predict_logits(net, tensors.images("test"), device.torch_device, dtype)
    labels = torch.from_numpy(tensors.labels("test"))
    report = classification_report(logits, labels, tensors.class_names)

    folder = artifacts.run_dir("test_metrics_report", context.run.run_id)
    confusion = confusion_matrix_plot(report, folder / "confusion_matrix.png")
    per_class = per_class_plot(report, folder / "per_class.png")
    precision = str(dtype).removeprefix("torch.")
    markdown = report_markdown(
        report, f"Test metrics ({precision} inference on {device.accelerator})"
    )
    figures = f"\n![confusion matrix]({confusion.name})\n\n![per-class scores]({per_class.name})\n"
    write_text(folder / "report.md", markdown + figures)
    path = write_json(folder / REPORT_FILE, report)
    low, high = report["accuracy_ci95"]
    context.log.info(
        f"test accuracy {report['accuracy']:.4f} (95% CI {low:.3f}-{high:.3f}, "
        f"n={report['n_test']}), macro F1 {report['macro_f1']:.4f}"
    )
    mlflow_links = tracking.log_evaluation(context.run, report, folder)
    inline_figures = "\n\n".join(
        [markdown_image(confusion, "confusion matrix"), markdown_image(per_class, "per class")]
    )
    return dg.Output(
        str(path),
        metadata={
            **artifact_metadata(path),
            "accuracy": report["accuracy"],
            "accuracy_ci95_low": low,
            "accuracy_ci95_high": high,
            "macro_f1": report["macro_f1"],
            "loss": report["loss"],
            "n_test": report["n_test"],
            "report": dg.MetadataValue.md(markdown + "\n" + inline_figures),
            "report_md": dg.MetadataValue.path(str(folder / "report.md")),
            "inference_dtype": precision,
            **mlflow_links,
        },
    )
