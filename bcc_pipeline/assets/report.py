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
    import pandas as pd

    from bcc_pipeline.data.split import split_fingerprint
    from bcc_pipeline.data.tensors import TensorSplits
    from bcc_pipeline.ml.checkpoint import load_classifier
    from bcc_pipeline.ml.report_folder import write_report_folder

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
    folder = artifacts.run_dir("test_metrics_report", context.run.run_id)
    written = write_report_folder(
        net,
        payload,
        tensors,
        table,
        device,
        folder,
        provenance={
            "data_dir": str(dataset.path.resolve()),
            "checkpoint": vit_checkpoint,
            "run_id": context.run.run_id,
        },
        warn=context.log.warning,
    )
    report = written.report
    low, high = report["accuracy_ci95"]
    context.log.info(
        f"test accuracy {report['accuracy']:.4f} (95% CI {low:.3f}-{high:.3f}, "
        f"n={report['n_test']}), macro F1 {report['macro_f1']:.4f}, macro AUROC "
        f"{_rounded(report['macro_auroc'])}, ECE {report['ece']:.4f} "
        f"(T = {written.temperature:.3f})"
    )
    mlflow_links = tracking.log_evaluation(context.run, report, folder)
    inline_figures = "\n\n".join(
        markdown_image(figure, caption) for caption, figure in written.figures.items()
    )
    auroc_low, auroc_high = report["macro_auroc_ci95"] or (None, None)
    return dg.Output(
        str(written.report_file),
        metadata={
            **artifact_metadata(written.report_file),
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
            "temperature": round(written.temperature, 4),
            "synthetic": "not recorded" if written.synthetic is None else written.synthetic,
            "explanation_maps": written.explanation_maps,
            "report": dg.MetadataValue.md(written.markdown + "\n" + inline_figures),
            "report_md": dg.MetadataValue.path(str(folder / "report.md")),
            "model_card": dg.MetadataValue.md(written.card),
            "model_card_md": dg.MetadataValue.path(str(written.card_file)),
            "inference_dtype": written.inference_dtype,
            **mlflow_links,
        },
    )
