import pytest
import torch

from bcc_pipeline.ml.evaluation import classification_report, report_markdown, wilson_interval
from bcc_pipeline_tests.conftest import REPORT_KEYS

NAMES = ["brain_glioma", "brain_menin", "brain_tumor"]


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), example: 81 successes of 263 -> 0.2553 to 0.3662.
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)


def test_report_is_internally_consistent():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    predicted = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 2, 2])
    logits = torch.nn.functional.one_hot(predicted, 3).float() * 4
    report = classification_report(logits, labels, NAMES)
    matrix = torch.tensor(report["confusion_matrix"])
    assert int(matrix.sum()) == report["n_test"] == 10
    assert report["accuracy"] == pytest.approx(float(matrix.trace()) / 10) == pytest.approx(0.7)
    assert matrix.tolist() == [[2, 1, 0], [0, 2, 1], [1, 0, 3]]
    assert report["per_class"]["brain_glioma"]["recall"] == pytest.approx(2 / 3)
    assert report["per_class"]["brain_glioma"]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"]["brain_tumor"]["support"] == 4
    f1s = [report["per_class"][n]["f1"] for n in NAMES]
    assert report["macro_f1"] == pytest.approx(sum(f1s) / 3)
    low, high = report["accuracy_ci95"]
    assert low < report["accuracy"] < high
    assert set(report) == REPORT_KEYS


def test_markdown_lists_every_class_and_the_interval():
    labels = torch.tensor([0, 1, 2])
    report = classification_report(torch.eye(3), labels, NAMES)
    text = report_markdown(report)
    assert all(f"| {name} |" in text for name in NAMES)
    assert "95% Wilson CI" in text
