import numpy as np
import pytest
import torch

from bcc_pipeline.ml.calibration import (
    calibrated_probabilities,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)


def _calibrated_case(n: int = 4000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose softmax is exactly right: each label is drawn from softmax(logits)."""
    generator = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(n, 3, generator=generator)
    labels = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator)[:, 0]
    return logits, labels


@pytest.mark.parametrize("scale", [3.0, 0.5])
def test_temperature_undoes_a_known_over_or_under_confidence(scale):
    """Logits `scale` times too large (over-confident) need T = scale; too small, T < 1."""
    logits, labels = _calibrated_case()
    distorted = scale * logits
    temperature = fit_temperature(distorted, labels)
    assert temperature == pytest.approx(scale, rel=0.1)
    before = expected_calibration_error(calibrated_probabilities(distorted, 1.0), labels)
    after = expected_calibration_error(calibrated_probabilities(distorted, temperature), labels)
    assert after < before / 2
    assert torch.equal(
        calibrated_probabilities(distorted, temperature).argmax(1), distorted.argmax(1)
    ), "calibration must not change any prediction"


def test_ece_of_a_hand_worked_case():
    # Top probabilities 0.9 and 0.9 (one right), 0.61 (right) and 0.69 (wrong): in 15 bins of
    # width 1/15 the last two fall apart, so ECE = 2/4 * |0.5 - 0.9| + 1/4 * |1 - 0.61|
    # + 1/4 * |0 - 0.69| = 0.2 + 0.0975 + 0.1725 = 0.47 (in 10 bins it would be 0.275).
    probabilities = torch.tensor(
        [[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.61, 0.29, 0.1], [0.21, 0.69, 0.1]]
    )
    labels = torch.tensor([0, 1, 0, 0])
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.47)


def test_reliability_bins_are_the_bins_the_ece_averages():
    logits, labels = _calibrated_case(n=500, seed=1)
    probabilities = calibrated_probabilities(3.0 * logits, 1.0)
    bins = reliability_bins(probabilities, labels)
    assert bins.count.sum() == 500
    filled = bins.count > 0
    gaps = np.abs(bins.accuracy[filled] - bins.confidence[filled]) * bins.count[filled] / 500
    assert gaps.sum() == pytest.approx(expected_calibration_error(probabilities, labels), abs=1e-6)
    assert np.isnan(bins.accuracy[~filled]).all()
