import math

import numpy as np
import pytest
from scipy.stats import binomtest

from bcc_pipeline.ml.comparison import NOTHING_COMPARED, challenger_shortfall, compare_paired


def _pairs(both: int, champion_only: int, challenger_only: int, neither: int):
    champion = [True] * both + [True] * champion_only + [False] * (challenger_only + neither)
    challenger = [True] * both + [False] * champion_only + [True] * challenger_only
    challenger += [False] * neither
    return np.array(champion), np.array(challenger)


def test_counts_and_exact_mcnemar_p_value():
    comparison = compare_paired(*_pairs(both=50, champion_only=9, challenger_only=2, neither=4))
    assert comparison.n == 65
    assert comparison.discordant == {"champion_only_correct": 9, "challenger_only_correct": 2}
    assert comparison.champion_accuracy == 59 / 65
    assert comparison.challenger_accuracy == 52 / 65
    assert comparison.p_value == pytest.approx(binomtest(2, 11, 0.5).pvalue)
    assert comparison.p_value < 0.07


def test_no_discordant_pair_is_no_evidence():
    assert compare_paired(*_pairs(10, 0, 0, 3)).p_value == 1.0
    assert math.isnan(compare_paired(np.array([]), np.array([])).p_value)


def test_models_scored_on_different_images_are_refused():
    with pytest.raises(ValueError, match="different images"):
        compare_paired(np.ones(3, bool), np.ones(4, bool))


@pytest.mark.parametrize(
    ("challenger_only", "refused"),
    # 100 images, champion alone right on 10, margin 0.05 = 5 images: 5 behind is allowed
    [(12, False), (10, False), (5, False), (4, True)],
)
def test_margin_boundary_in_images(challenger_only, refused):
    comparison = compare_paired(*_pairs(70, 10, challenger_only, 20 - challenger_only))
    assert comparison.n == 100
    reasons = challenger_shortfall(comparison, margin=0.05, alpha=0.0)
    assert bool(reasons) == refused
    if refused:
        assert "more than the margin 0.0500" in reasons[0]


def test_significantly_worse_within_the_margin_is_refused():
    comparison = compare_paired(*_pairs(both=0, champion_only=70, challenger_only=30, neither=0))
    assert comparison.p_value < 0.05
    assert "significantly worse" in challenger_shortfall(comparison, margin=0.5, alpha=0.05)[0]
    assert challenger_shortfall(comparison, margin=0.5, alpha=comparison.p_value / 2) == []


def test_better_challenger_is_never_refused_for_significance():
    comparison = compare_paired(*_pairs(both=0, champion_only=30, challenger_only=70, neither=0))
    assert challenger_shortfall(comparison, margin=0.0, alpha=0.05) == []


def test_nothing_compared_is_a_reason_to_keep_production():
    assert "no test image is untouched" in challenger_shortfall(NOTHING_COMPARED, 0.01, 0.05)[0]
