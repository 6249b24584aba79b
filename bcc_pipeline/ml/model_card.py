"""model_card.md: what the model is, what it was trained and tested on, how well it does (with
intervals), how far its probabilities can be trusted, and what it is not for. Built only from
facts the pipeline holds: the checkpoint, the split table and the report."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bcc_pipeline.data.split import SPLITS
from bcc_pipeline.markdown import markdown_text
from bcc_pipeline.ml.backbones import weights_origin
from bcc_pipeline.ml.evaluation import headline_lines, per_class_table, provenance_lines

INTENDED_USE = "research on the Kaggle/Mendeley brain MRI slices; not for clinical diagnosis"
OWN_DATA_INTENDED_USE = (
    "research on brain MRI slices like the training data; not for clinical diagnosis"
)
CLASS_MEANINGS = {
    "brain_glioma": (
        "glioma: a tumour of the glial cells, within the brain tissue",
        "none known",
    ),
    "brain_menin": (
        "meningioma: a tumour of the meninges, the membranes around the brain",
        "none known",
    ),
    "brain_tumor": (
        "the dataset's third class, an unspecified tumour class",
        "the source does not say which tumour it is; some users take it for pituitary "
        "tumours. Read a `brain_tumor` prediction as 'another tumour', nothing more specific",
    ),
}
KAGGLE_CLASSES = tuple(sorted(CLASS_MEANINGS))
"""The Kaggle/Mendeley collection's class folders (the generator's too): only data with exactly
these classes is said to come from that collection."""


@dataclass(frozen=True)
class DataSummary:
    """What the split table says about the data a model was trained and tested on."""

    counts: pd.DataFrame
    """Images per class (rows) and split (columns), with totals."""
    duplicate_groups: int
    images_in_duplicate_groups: int
    synthetic: bool | None
    """Whether the images came from bcc_pipeline's generator; None for a split table written
    before the manifest recorded it."""

    @classmethod
    def of(cls, table: pd.DataFrame) -> DataSummary:
        counts = pd.crosstab(table["label"], table["split"], margins=True, margins_name="all")
        counts = counts.reindex(columns=[*SPLITS, "all"], fill_value=0)
        sizes = table.groupby("group").size()
        duplicates = sizes[sizes > 1]
        synthetic = bool(table["synthetic"].any()) if "synthetic" in table else None
        return cls(counts, len(duplicates), int(duplicates.sum()), synthetic)


def model_card_markdown(
    report: dict, checkpoint: dict, data: DataSummary, explanation_method: str | None
) -> str:
    """The model card of `checkpoint`, as evaluated in `report`. What it says of the data's
    source and classes follows the data: the Kaggle/Mendeley collection only for its classes,
    the user's folder otherwise. Names from the data are escaped (see markdown_text)."""
    backbone = checkpoint["backbone"]
    training, fit = checkpoint["training"], checkpoint["metrics"]
    provenance = report["provenance"]
    class_names = report["class_names"]
    kaggle = tuple(sorted(class_names)) == KAGGLE_CLASSES
    intended_use = INTENDED_USE if kaggle else OWN_DATA_INTENDED_USE
    lines = [f"# Model card: `{backbone['name']}` brain-MRI slice classifier", ""]
    if data.synthetic:
        lines += [
            "> **Trained and tested on SYNTHETIC data** drawn by `bcc-pipeline sample-data`: "
            "cartoon slices, not medical images. Nothing below says anything about MRI.",
            "",
        ]
    lines += [
        "## Model",
        "",
        f"- torchvision `{backbone['name']}` with a new linear head for "
        f"{len(report['class_names'])} classes; input {checkpoint['image_size']} px RGB "
        "(grey slices padded to square, resized), normalised with mean "
        f"{_values(checkpoint['normalization']['mean'])} and std "
        f"{_values(checkpoint['normalization']['std'])}",
        f"- starting weights: {weights_origin(backbone['name'], backbone['weights'])}",
        f"- trained: {_trained_part(backbone['trainable_blocks'])}; Adam, learning rate "
        f"{training['learning_rate']}, batch {training['batch_size']}, up "
        f"to {training['max_epochs']} epochs with early stopping on val_loss "
        f"(patience {training['early_stopping_patience']}), random horizontal flips "
        f"{'on' if training['horizontal_flip'] else 'off'}, seed {training['seed']}",
        f"- kept: epoch {fit['best_epoch']} of {fit['epochs_run']} (lowest "
        f"val_loss {fit['best_val_loss']}, val accuracy "
        f"{fit['best_val_acc']} on {fit['n_val']} images)",
        f"- inference precision: {checkpoint['inference_dtype']}; temperature "
        f"T = {report['temperature']:.3f} (fitted on the validation split)",
        f"- libraries: {_library_versions(checkpoint['versions'])}",
        "",
        "## Intended use",
        "",
        f"Intended use: **{intended_use}**. Out of scope: any decision about a patient, other "
        "sequences, views, scanners or populations than the training data, and images that are "
        "not brain MRI slices (the model still gives them a class).",
        "",
        "## Classes",
        "",
        "| label | meaning | known ambiguity |",
        "| --- | --- | --- |",
    ]
    for name in class_names:
        meaning, ambiguity = CLASS_MEANINGS.get(name, ("a class folder of this data", "unknown"))
        lines.append(f"| {markdown_text(name)} | {meaning} | {ambiguity} |")
    lines += [
        "",
        "## Data",
        "",
        *provenance_lines(provenance),
        "",
        "Images per class and split:",
        "",
        data.counts.rename(index=markdown_text)
        .reset_index()
        .rename(columns={"label": "class"})
        .to_markdown(index=False),
        "",
        "Duplicate groups (byte-identical or near-identical images): "
        f"{data.duplicate_groups}, of {data.images_in_duplicate_groups} images. Each group sits "
        "in one split, so no test image has a copy in training, and the AUROC interval "
        "resamples whole groups.",
        "",
        "## Test results",
        "",
        *headline_lines(report),
        "",
        *per_class_table(report),
        "",
        "Probabilities are calibrated by temperature scaling; the reliability diagram shows "
        "how often the model is right at each level of confidence, before and after.",
        "",
        "## Limitations",
        "",
        "- Single 2D slices, one at a time: no volume, no other sequence, no clinical context.",
        f"- One source ({_source(data, provenance, kaggle)}): scanners, protocols and "
        "patients beyond it are untested, and the calibration was fitted on the same source.",
        f"- {report['n_test']} test images: read the intervals, not just the point estimates.",
    ]
    if "brain_tumor" in class_names:
        lines.append("- `brain_tumor` is an unspecified tumour class (see Classes).")
    lines += [
        "- Explanation maps ("
        + (explanation_method or "not available for this backbone")
        + ") show where the model's signal came from, not why, and are not a segmentation.",
    ]
    if data.synthetic:
        lines.append(
            "- The data was SYNTHETIC (the demo's generator): the numbers are about cartoons."
        )
    return "\n".join(lines) + "\n"


def _source(data: DataSummary, provenance: dict, kaggle: bool) -> str:
    """Where the images came from, as far as the pipeline knows."""
    if data.synthetic:
        return "SYNTHETIC images from bcc_pipeline's generator"
    if kaggle:
        return "the Kaggle/Mendeley collection"
    return f"the images in {markdown_text(provenance['data_dir'])}"


def _values(numbers: list[float]) -> str:
    return "(" + ", ".join(f"{value:.3f}" for value in numbers) + ")"


def _trained_part(trainable_blocks: int) -> str:
    if trainable_blocks == 0:
        return "the head only (backbone frozen)"
    if trainable_blocks < 0:
        return "the whole network"
    return f"the head and the last {trainable_blocks} backbone blocks"


def _library_versions(versions: dict[str, str]) -> str:
    return ", ".join(f"{name} {version}" for name, version in versions.items())
