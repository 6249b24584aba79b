import math
from html import unescape

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import bootstrap
from torchmetrics.functional.classification import binary_auroc

from bcc_pipeline.ml.calibration import calibrated_probabilities, expected_calibration_error
from bcc_pipeline.ml.evaluation import (
    classification_report,
    macro_auroc,
    macro_auroc_interval,
    report_markdown,
    weighted_auroc,
    wilson_interval,
)
from bcc_pipeline_tests.conftest import PER_CLASS_KEYS, REPORT_KEYS
from bcc_pipeline_tests.rendered_markdown import rendered_html, rendered_tables, shown

NAMES = ["brain_glioma", "brain_menin", "brain_tumor"]


def _wilson_by_hand(successes: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    p = successes / total
    centre = p + z * z / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return ((centre - spread) / (1 + z * z / total), (centre + spread) / (1 + z * z / total))


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
    assert all(set(scores) == PER_CLASS_KEYS for scores in report["per_class"].values())


def test_sensitivity_and_specificity_with_wilson_intervals_by_hand():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 0, 0])
    report = classification_report(torch.nn.functional.one_hot(predicted, 3) * 4.0, labels, NAMES)
    # brain_glioma: 3 of 4 gliomas found; 4 of the 6 others not called glioma (2 tumours were).
    # brain_tumor: 2 of 4 found; 5 of the 6 others not called tumour (1 meningioma was).
    for name, (tp, positives), (tn, negatives) in [
        ("brain_glioma", (3, 4), (4, 6)),
        ("brain_tumor", (2, 4), (5, 6)),
    ]:
        scores = report["per_class"][name]
        assert scores["sensitivity"] == pytest.approx(tp / positives)
        assert scores["specificity"] == pytest.approx(tn / negatives)
        assert scores["sensitivity_ci95"] == pytest.approx(_wilson_by_hand(tp, positives))
        assert scores["specificity_ci95"] == pytest.approx(_wilson_by_hand(tn, negatives))


def test_auroc_per_class_and_macro_by_hand():
    probabilities = torch.tensor(
        [
            [0.8, 0.1, 0.1],
            [0.4, 0.5, 0.1],
            [0.3, 0.6, 0.1],
            [0.5, 0.2, 0.3],
            [0.15, 0.25, 0.6],
            [0.1, 0.3, 0.6],
        ]
    )
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    report = classification_report(probabilities.log(), labels, NAMES)
    # Pairs (positive, negative) ranked right, of 2 x 4: glioma 0.8 beats all 4 negatives and
    # 0.4 beats 3 (not 0.5): 7/8. Meningioma 0.6 beats 4, 0.2 beats only 0.1: 5/8. Tumour 8/8.
    aurocs = [report["per_class"][name]["auroc"] for name in NAMES]
    assert aurocs == pytest.approx([7 / 8, 5 / 8, 1.0])
    assert report["macro_auroc"] == pytest.approx((7 / 8 + 5 / 8 + 1.0) / 3)


def test_auroc_ranks_the_calibrated_probabilities():
    """Dividing by T can reorder one class's probabilities across images: at T = 1 the glioma
    has the higher glioma probability, at T = 10 the meningioma does (0.45 against 0.38)."""
    logits = torch.tensor([[2.0, 0.0, 0.0], [3.0, 2.5, -10.0], [-5.0, -5.0, 5.0]])
    labels = torch.tensor([0, 1, 2])
    sharp = classification_report(logits, labels, NAMES, temperature=1.0)
    soft = classification_report(logits, labels, NAMES, temperature=10.0)
    assert sharp["per_class"]["brain_glioma"]["auroc"] == 1.0
    assert soft["per_class"]["brain_glioma"]["auroc"] == 0.5


def test_auroc_of_a_class_missing_from_the_test_split_is_undefined_not_zero():
    probabilities = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    report = classification_report(probabilities.log(), torch.tensor([0, 1, 0]), NAMES)
    assert report["per_class"]["brain_tumor"]["auroc"] is None
    assert report["macro_auroc"] == pytest.approx(1.0)


def test_calibration_keys_use_the_temperature():
    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(200, 3, generator=generator)
    labels = torch.randint(0, 3, (200,), generator=generator)
    report = classification_report(logits, labels, NAMES, temperature=2.5)
    assert report["temperature"] == 2.5
    calibrated = calibrated_probabilities(logits, 2.5)
    assert report["ece"] == pytest.approx(expected_calibration_error(calibrated, labels))
    raw = torch.softmax(logits, dim=1)
    assert report["ece_uncalibrated"] == pytest.approx(expected_calibration_error(raw, labels))
    assert report["ece"] < report["ece_uncalibrated"]


def _noisy_case(per_class: int = 15) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    labels = torch.arange(3).repeat_interleave(per_class)
    logits = 1.5 * torch.nn.functional.one_hot(labels, 3) + torch.randn(
        len(labels), 3, generator=generator
    )
    return torch.softmax(logits, dim=1), labels


def test_bootstrap_interval_holds_the_estimate_and_is_reproducible_with_its_seed():
    probabilities, labels = _noisy_case()
    groups = [f"g{i}" for i in range(len(labels))]
    low, high = macro_auroc_interval(probabilities, labels, groups, seed=7, resamples=400)
    assert low < macro_auroc(probabilities, labels) < high
    assert macro_auroc_interval(probabilities, labels, groups, seed=7, resamples=400) == (low, high)
    assert macro_auroc_interval(probabilities, labels, groups, seed=8, resamples=400) != (low, high)


def test_weighted_auroc_is_torchmetrics_auroc_of_each_image_repeated_as_often_as_weighted():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, 40) / 4  # few distinct scores: many ties
    labels = rng.integers(0, 3, 40)
    weights = rng.integers(0, 4, (6, 40))
    for c in range(3):
        areas = weighted_auroc(scores, labels == c, weights)
        for area, row in zip(areas, weights, strict=True):
            rows = np.repeat(np.arange(40), row)
            expected = binary_auroc(torch.tensor(scores[rows]), torch.tensor(labels[rows] == c))
            assert area == pytest.approx(float(expected), abs=1e-6)  # torchmetrics: float32


def test_weighted_auroc_is_undefined_without_a_positive():
    scores, positive = np.array([0.5, 0.9, 0.1]), np.array([True, False, False])
    areas = weighted_auroc(scores, positive, np.array([[0, 1, 1], [1, 1, 1]]))
    assert np.isnan(areas[0]) and areas[1] == 0.5


def _torchmetrics_bootstrap(probabilities, labels, groups, seed, resamples):
    """The interval computed the slow way: torchmetrics' macro AUROC of each resample's rows."""
    frame = pd.DataFrame({"label": labels.numpy(), "group": groups})
    clusters = frame.groupby(["label", "group"], sort=True).indices
    members, cluster_labels = list(clusters.values()), np.array([label for label, _ in clusters])
    per_class = [np.flatnonzero(cluster_labels == label) for label in np.unique(cluster_labels)]
    fixed = [members[ids[0]] for ids in per_class if len(ids) == 1]

    def statistic(*samples):
        rows = np.concatenate(fixed + [members[i] for ids in samples for i in ids])
        return macro_auroc(probabilities[rows], labels[rows])

    drawn = tuple(ids for ids in per_class if len(ids) > 1)
    interval = bootstrap(
        drawn,
        statistic,
        n_resamples=resamples,
        vectorized=False,
        paired=False,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return (interval.low, interval.high)


def test_interval_is_the_bootstrap_of_torchmetrics_macro_auroc_over_drawn_groups():
    """Groups of several images, one class in a single group (kept in every resample), and
    rounded probabilities (ties): the same draws give the same interval as one torchmetrics
    call per resample."""
    probabilities, labels = _noisy_case()
    probabilities = (probabilities * 20).round() / 20
    groups = [f"g{i // 3}" if label < 2 else "one" for i, label in enumerate(labels.tolist())]
    fast = macro_auroc_interval(probabilities, labels, groups, seed=5, resamples=300)
    slow = _torchmetrics_bootstrap(probabilities, labels, groups, seed=5, resamples=300)
    assert fast == pytest.approx(slow, abs=1e-6)  # torchmetrics computes in float32


def test_duplicates_in_one_group_do_not_narrow_the_interval():
    """Every image twice: counted as independent, the copies narrow the interval; as one
    duplicate group each, the interval is the one of the images without copies."""
    probabilities, labels = _noisy_case()
    names = [f"g{i}" for i in range(len(labels))]
    once = macro_auroc_interval(probabilities, labels, names, seed=1, resamples=400)
    twice_p, twice_y = probabilities.repeat_interleave(2, 0), labels.repeat_interleave(2)
    grouped = macro_auroc_interval(twice_p, twice_y, [n for n in names for _ in "ab"], 1, 400)
    separate = macro_auroc_interval(
        twice_p, twice_y, [f"{n}{copy}" for n in names for copy in "ab"], 1, 400
    )
    assert grouped == pytest.approx(once)
    assert separate[1] - separate[0] < 0.85 * (once[1] - once[0])


def test_markdown_lists_every_class_and_the_intervals():
    labels = torch.tensor([0, 1, 2])
    report = classification_report(torch.eye(3), labels, NAMES)
    text = report_markdown(report)
    assert all(f"| {name} |" in text for name in NAMES)
    assert "95% Wilson CI" in text
    assert "macro AUROC" in text and "ECE" in text and "T = 1.000" in text


HOSTILE_NAMES = [
    "glioma | WHO grade 2",
    "menin\nextra",
    '<img src=x onerror="alert(1)">',
    "grade $II_$",
    "*bold* [link](x) `code` back\\slash & co",
]


def test_names_with_markdown_or_html_show_as_written_in_report_md_tables():
    labels = torch.arange(len(HOSTILE_NAMES))
    report = classification_report(torch.eye(len(labels))[labels] * 3, labels, HOSTILE_NAMES)
    report["provenance"] = {
        "data_dir": "/data/<b>mine</b> | _x_",
        "synthetic": False,
        "backbone": "vit_tiny",
        "weights": "/w/<i>local</i>.pt",
        "model_run_id": "run-1",
        "run_id": "run-2",
        "split_fingerprint": "f00d",
    }
    text = report_markdown(report)
    per_class, confusion = rendered_tables(text)
    names = [shown(name) for name in HOSTILE_NAMES]
    assert all(len(row) == len(table[0]) for table in (per_class, confusion) for row in table)
    assert [row[0] for row in per_class[1:]] == names
    assert per_class[0][1] == "precision" and all(row[1] == "1.000" for row in per_class[1:])
    assert confusion[0][1:] == names and [row[0] for row in confusion[1:]] == names
    html = rendered_html(text)
    assert "<img" not in html and "<b>" not in html and "<i>" not in html
    assert "data: /data/<b>mine</b> | _x_" in unescape(html)
    assert "weights /w/<i>local</i>.pt" in unescape(html)


def test_rates_a_test_split_cannot_measure_are_none_not_zero():
    """No tumour in the test split: its sensitivity, F1 and their interval do not exist, and
    no image was called a tumour: nor does its precision. Its specificity does (6 of 6)."""
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    predicted = torch.tensor([0, 0, 1, 1, 1, 1])
    report = classification_report(torch.nn.functional.one_hot(predicted, 3) * 4.0, labels, NAMES)
    tumor = report["per_class"]["brain_tumor"]
    assert tumor["support"] == 0
    for rate in ("recall", "sensitivity", "sensitivity_ci95", "f1", "precision"):
        assert tumor[rate] is None, rate
    assert tumor["specificity"] == 1.0 and tumor["specificity_ci95"][0] > 0.5
    f1s = [report["per_class"][name]["f1"] for name in NAMES[:2]]
    assert report["macro_f1"] == pytest.approx(sum(f1s) / 2)
    markdown = report_markdown(report)
    assert "macro F1: **" in markdown and "(over 2 of 3 classes: brain_glioma, brain_menin)" in (
        markdown
    )
    assert "**no test image of brain_tumor**: its rates are n/a" in markdown
    assert "| brain_tumor | n/a | n/a (n/a) | 1.000 (" in markdown


def test_specificity_of_a_class_every_test_image_belongs_to_is_none():
    labels = torch.tensor([0, 0, 0])
    report = classification_report(torch.nn.functional.one_hot(labels, 3) * 4.0, labels, NAMES)
    glioma = report["per_class"]["brain_glioma"]
    assert glioma["specificity"] is None and glioma["specificity_ci95"] is None
    assert glioma["sensitivity"] == 1.0


def test_no_auroc_interval_where_no_class_has_two_groups_to_draw():
    probabilities = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    labels = torch.tensor([0, 1, 2])
    assert macro_auroc(probabilities, labels) == 1.0
    assert macro_auroc_interval(probabilities, labels, ["a", "b", "c"]) is None
