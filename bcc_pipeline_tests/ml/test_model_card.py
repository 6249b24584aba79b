from html import unescape

import pandas as pd
import pytest
import torch

from bcc_pipeline.ml.checkpoint import read_checkpoint
from bcc_pipeline.ml.evaluation import classification_report
from bcc_pipeline.ml.model_card import (
    CLASS_MEANINGS,
    INTENDED_USE,
    DataSummary,
    model_card_markdown,
)
from bcc_pipeline.ml.settings import TrainingSettings
from bcc_pipeline_tests.conftest import CLASSES, save_tiny_checkpoint
from bcc_pipeline_tests.rendered_markdown import rendered_html, rendered_tables, shown

COUNTS = {"train": (14, 13, 12), "val": (4, 4, 3), "test": (2, 3, 2)}


def _split_table(synthetic: bool, names: list[str] = CLASSES) -> pd.DataFrame:
    rows = [
        {
            "path": f"{label}/{split}_{i}.jpg",
            "label": label,
            "split": split,
            "group": f"{label}{split}{i}",
        }
        for split, counts in COUNTS.items()
        for label, count in zip(names, counts, strict=True)
        for i in range(count)
    ]
    table = pd.DataFrame(rows)
    table.loc[[0, 1, 2], "group"] = "copies"  # three images of one duplicate group
    table["synthetic"] = synthetic
    return table


@pytest.fixture
def checkpoint(tmp_path) -> dict:
    metrics = {"best_epoch": 4, "epochs_run": 7, "best_val_loss": 0.31, "best_val_acc": 0.9}
    extra = {
        "training": TrainingSettings(backbone="vit_tiny", weights="none").model_dump(),
        "metrics": {**metrics, "n_val": 11},
        "run_id": "run-1",
    }
    return read_checkpoint(save_tiny_checkpoint(tmp_path / "model.pt", extra=extra))


def _card(
    checkpoint: dict,
    synthetic: bool | None,
    names: list[str] = CLASSES,
    data_dir: str = "/data/brain_cancer",
) -> str:
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    report = classification_report(torch.eye(3)[labels] * 3, labels, names, temperature=1.7)
    report["provenance"] = {
        "data_dir": data_dir,
        "synthetic": synthetic,
        "backbone": "vit_tiny",
        "weights": "none",
        "checkpoint": "/a/model.pt",
        "model_run_id": "run-1",
        "run_id": "run-2",
        "split_fingerprint": "f00d",
    }
    table = _split_table(bool(synthetic), names)
    if synthetic is None:  # a split table from before the manifest recorded it
        table = table.drop(columns="synthetic")
    data = DataSummary.of(table)
    return model_card_markdown(report, checkpoint, data, "attention rollout")


def test_model_card_names_the_classes_counts_and_intended_use(checkpoint):
    card = _card(checkpoint, synthetic=False)
    assert INTENDED_USE in card
    assert "not for clinical diagnosis" in card
    for name in CLASSES:
        assert f"| {name} | {CLASS_MEANINGS[name][0]} |" in card
    assert "pituitary" in card, "the brain_tumor ambiguity is stated"
    # The counts table: per class and split, with totals.
    assert "| brain_glioma |      14 |     4 |      2 |    20 |" in card
    assert "| all          |      39 |    11 |      7 |    57 |" in card
    assert "Duplicate groups (byte-identical or near-identical images): 1, of 3 images" in card
    assert "T = 1.700" in card and "random initialisation" in card
    assert "epoch 4 of 7" in card and "/data/brain_cancer" in card
    assert "SYNTHETIC" not in card


def test_model_card_says_when_the_data_was_synthetic(checkpoint):
    card = _card(checkpoint, synthetic=True)
    assert "Trained and tested on SYNTHETIC data" in card
    assert card.count("SYNTHETIC") >= 3, "banner, data line and limitations"


KAGGLE_SOURCE = "One source (the Kaggle/Mendeley collection)"
BRAIN_TUMOR_LIMITATION = "- `brain_tumor` is an unspecified tumour class"


@pytest.mark.parametrize("synthetic", [False, None])
def test_model_card_says_kaggle_and_brain_tumor_for_the_kaggle_classes(checkpoint, synthetic):
    card = _card(checkpoint, synthetic, names=["brain_tumor", "brain_menin", "brain_glioma"])
    assert KAGGLE_SOURCE in card and INTENDED_USE in card
    assert BRAIN_TUMOR_LIMITATION in card


def test_model_card_of_the_users_own_classes_names_their_folder_not_kaggle(checkpoint):
    card = _card(checkpoint, False, names=["glioma", "meningioma", "pituitary"], data_dir="/d/mri")
    assert "One source (the images in /d/mri)" in card
    assert "Kaggle" not in card and "brain_tumor" not in card


def test_model_card_mentions_brain_tumor_only_where_that_class_is(checkpoint):
    with_it = _card(checkpoint, False, names=["brain_glioma", "brain_tumor", "other"])
    assert BRAIN_TUMOR_LIMITATION in with_it and KAGGLE_SOURCE not in with_it
    without = _card(checkpoint, False, names=["brain_glioma", "brain_menin", "other"])
    assert "brain_tumor" not in without and KAGGLE_SOURCE not in without


def test_model_card_of_synthetic_data_does_not_say_kaggle_is_its_source(checkpoint):
    card = _card(checkpoint, synthetic=True)
    assert KAGGLE_SOURCE not in card
    assert "One source (SYNTHETIC images from bcc_pipeline's generator)" in card


def test_names_from_the_data_show_as_written_in_every_table_of_the_model_card(checkpoint):
    names = ["glioma | WHO grade 2", "menin\nextra", '<img src=x onerror="alert(1)">']
    data_dir = "/data/<b>mine</b> | *x*"
    card = _card(checkpoint, False, names=names, data_dir=data_dir)
    classes, counts, per_class = rendered_tables(card)
    expected = [shown(name) for name in names]
    for table in (classes, counts, per_class):
        assert all(len(row) == len(table[0]) for row in table)
    assert [row[0] for row in classes[1:]] == expected
    assert [row[0] for row in counts[1:]] == sorted(expected) + ["all"]
    assert [row[0] for row in per_class[1:]] == expected
    html = rendered_html(card)
    assert "<img" not in html and "<b>" not in html
    assert f"One source (the images in {data_dir})" in unescape(html)
