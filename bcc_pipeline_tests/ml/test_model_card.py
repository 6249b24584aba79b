import pandas as pd
import pytest
import torch

from bcc_pipeline.ml.checkpoint import read_checkpoint
from bcc_pipeline.ml.evaluation import classification_report
from bcc_pipeline.ml.model_card import INTENDED_USE, DataSummary, model_card_markdown
from bcc_pipeline.ml.settings import TrainingSettings
from bcc_pipeline_tests.conftest import CLASSES, save_tiny_checkpoint

COUNTS = {"train": (14, 13, 12), "val": (4, 4, 3), "test": (2, 3, 2)}


def _split_table(synthetic: bool) -> pd.DataFrame:
    rows = [
        {
            "path": f"{label}/{split}_{i}.jpg",
            "label": label,
            "split": split,
            "group": f"{label}{split}{i}",
        }
        for split, counts in COUNTS.items()
        for label, count in zip(CLASSES, counts, strict=True)
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


def _card(checkpoint: dict, synthetic: bool) -> str:
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    report = classification_report(torch.eye(3)[labels] * 3, labels, CLASSES, temperature=1.7)
    report["provenance"] = {
        "data_dir": "/data/brain_cancer",
        "synthetic": synthetic,
        "backbone": "vit_tiny",
        "weights": "none",
        "checkpoint": "/a/model.pt",
        "model_run_id": "run-1",
        "run_id": "run-2",
        "split_fingerprint": "f00d",
    }
    data = DataSummary.of(_split_table(synthetic))
    return model_card_markdown(report, checkpoint, data, "attention rollout")


def test_model_card_names_the_classes_counts_and_intended_use(checkpoint):
    card = _card(checkpoint, synthetic=False)
    assert INTENDED_USE in card
    assert "not for clinical diagnosis" in card
    for name in CLASSES:
        assert f"| `{name}` |" in card
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
