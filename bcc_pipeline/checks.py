"""Asset checks, beside the assets they check; the report gate also decides promotion."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd

from bcc_pipeline.data.manifest import OK, OS_FILE, OUTSIDE_CLASS_FOLDERS
from bcc_pipeline.data.split import SPLITS
from bcc_pipeline.ml.promotion import accuracy_gate
from bcc_pipeline.resources import QualityGatesResource

WARN = dg.AssetCheckSeverity.WARN


@dg.asset_check(asset="raw_image_manifest", description="Every class has enough usable images.")
def enough_images_per_class(
    raw_image_manifest: str, quality: QualityGatesResource
) -> dg.AssetCheckResult:
    manifest = pd.read_parquet(raw_image_manifest)
    counts = manifest[manifest["status"] == OK].groupby("label").size()
    short = counts[counts < quality.min_images_per_class]
    return dg.AssetCheckResult(
        passed=short.empty,
        metadata={
            "fewest": int(counts.min()),
            "minimum": quality.min_images_per_class,
            "short_classes": dg.MetadataValue.json(short.to_dict()),
        },
    )


@dg.asset_check(
    asset="raw_image_manifest",
    description="Few data files are rejected (operating-system files, such as the ._ twins a "
    "Mac zip holds of every image, are not data and do not count).",
)
def rejected_fraction_is_small(
    raw_image_manifest: str, quality: QualityGatesResource
) -> dg.AssetCheckResult:
    manifest = pd.read_parquet(raw_image_manifest)
    data = manifest[manifest["status"] != OS_FILE]
    fraction = float((data["status"] != OK).mean()) if len(data) else 0.0
    return dg.AssetCheckResult(
        passed=fraction <= quality.max_rejected_fraction,
        severity=WARN,
        metadata={"rejected_fraction": fraction, "threshold": quality.max_rejected_fraction},
    )


@dg.asset_check(
    asset="stratified_split",
    blocking=True,
    description="No duplicate group (identical or near-identical images) spans two splits.",
)
def no_leak_across_splits(stratified_split: str) -> dg.AssetCheckResult:
    table = pd.read_parquet(stratified_split)
    splits_per_group = table.groupby("group")["split"].nunique()
    splits_per_digest = table.groupby("sha256")["split"].nunique()
    leaking = sorted(set(splits_per_group[splits_per_group > 1].index))
    return dg.AssetCheckResult(
        passed=not leaking and int(splits_per_digest.max()) == 1,
        metadata={"leaking_groups": dg.MetadataValue.json(leaking[:20])},
    )


@dg.asset_check(
    asset="stratified_split",
    description="Each class's share of each split is close to the configured fraction.",
)
def split_proportions_within_tolerance(
    stratified_split: str, quality: QualityGatesResource
) -> dg.AssetCheckResult:
    table = pd.read_parquet(stratified_split)
    shares = pd.crosstab(table["label"], table["split"], normalize="index")
    shares = shares.reindex(columns=list(SPLITS), fill_value=0.0)
    configured = pd.Series(table.attrs["fractions"])[list(SPLITS)]
    worst = float((shares - configured).abs().to_numpy().max())
    return dg.AssetCheckResult(
        passed=worst <= quality.split_tolerance,
        metadata={
            "configured": dg.MetadataValue.json(table.attrs["fractions"]),
            "largest_gap": worst,
            "tolerance": quality.split_tolerance,
            "shares": dg.MetadataValue.md(shares.round(3).reset_index().to_markdown(index=False)),
        },
    )


@dg.asset_check(
    asset="stratified_split", description="No image content is left in with two labels."
)
def no_conflicting_labels(stratified_split: str) -> dg.AssetCheckResult:
    table = pd.read_parquet(stratified_split)
    labels_per_group = table.groupby("group")["label"].nunique()
    conflicts = labels_per_group[labels_per_group > 1]
    return dg.AssetCheckResult(
        passed=conflicts.empty, metadata={"conflicting_groups": len(conflicts)}
    )


@dg.asset_check(asset="vit_checkpoint", description="Every weight is a finite number.")
def weights_are_finite(vit_checkpoint: str) -> dg.AssetCheckResult:
    import torch

    from bcc_pipeline.ml.checkpoint import read_checkpoint

    state = read_checkpoint(vit_checkpoint)["state_dict"]
    bad = [name for name, tensor in state.items() if not torch.isfinite(tensor).all()]
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={"tensors": len(state), "non_finite": dg.MetadataValue.json(bad[:20])},
    )


@dg.asset_check(
    asset="vit_checkpoint",
    description="At the best epoch, more validation images are right than guessing would get.",
)
def validation_accuracy_above_chance(vit_checkpoint: str) -> dg.AssetCheckResult:
    from bcc_pipeline.ml.checkpoint import read_checkpoint

    payload = read_checkpoint(vit_checkpoint)
    n_val = int(payload["metrics"]["n_val"])
    chance = 1.0 / len(payload["class_names"])
    accuracy = float(payload["metrics"]["best_val_acc"])
    # Counted in images, not compared as floats: a float32 0.33333334 is not above chance.
    correct = round(accuracy * n_val)
    return dg.AssetCheckResult(
        passed=correct > n_val * chance,
        metadata={"best_val_acc": accuracy, "correct": correct, "n_val": n_val, "chance": chance},
    )


@dg.asset_check(
    asset="production_model",
    additional_ins={"test_metrics_report": dg.AssetIn("test_metrics_report")},
    blocking=True,
    description=(
        "The retrained model's test accuracy is at or above the floor. Blocking: below it the "
        "run fails (after production_model has recorded the refusal), so a retraining job "
        "that produced a model below the floor does not end green."
    ),
)
def accuracy_meets_floor(
    test_metrics_report: str, quality: QualityGatesResource
) -> dg.AssetCheckResult:
    report = json.loads(Path(test_metrics_report).read_text())
    failures = accuracy_gate(report, quality.accuracy_floor)
    return dg.AssetCheckResult(
        passed=not failures,
        metadata={
            "accuracy": report["accuracy"],
            "floor": quality.accuracy_floor,
            "reason": "; ".join(failures) or "meets the floor",
        },
    )


@dg.asset_check(
    asset="raw_image_manifest",
    description=(
        "No image sits outside the class folders (beside or above them): such images are left "
        "out instead of silently becoming a class of their own."
    ),
)
def images_inside_class_folders(raw_image_manifest: str) -> dg.AssetCheckResult:
    manifest = pd.read_parquet(raw_image_manifest)
    outside = manifest[manifest["status"] == OUTSIDE_CLASS_FOLDERS]
    return dg.AssetCheckResult(
        passed=outside.empty,
        severity=WARN,
        metadata={
            "outside_class_folders": len(outside),
            "paths": dg.MetadataValue.json(outside["path"].tolist()[:20]),
        },
    )
