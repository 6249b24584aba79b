"""How far to trust a probability: temperature scaling (Guo et al., 2017) and the expected
calibration error. One scalar T, fitted on the validation logits, turns softmax(logits / T) into
probabilities that match how often the model is right, without changing any prediction."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from torchmetrics.classification import MulticlassCalibrationError

CALIBRATION_BINS = 15
TEMPERATURE_BOUNDS = (0.05, 20.0)
"""Beyond these the fit has found no calibration to do, only a degenerate optimum (a validation
split the model gets entirely right drives T towards 0)."""


def calibrated_probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) in float32: the probabilities the report and predict give."""
    return torch.softmax(logits.float() / temperature, dim=1)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T that minimises the negative log-likelihood of `labels` (bounded search over log T:
    the NLL is smooth and has one minimum there)."""
    logits = logits.float()

    def nll(log_temperature: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_temperature), labels))

    low, high = (math.log(bound) for bound in TEMPERATURE_BOUNDS)
    result = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    return math.exp(result.x)


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-label ECE over 15 equal-width confidence bins (l1): the average gap between how
    sure the model says it is and how often it is right, weighted by the images in each bin."""
    metric = MulticlassCalibrationError(
        num_classes=probabilities.shape[1], n_bins=CALIBRATION_BINS, norm="l1"
    )
    return float(metric(probabilities, labels))


@dataclass(frozen=True)
class ReliabilityBins:
    """What a reliability diagram draws: per confidence bin, the mean top probability, the
    share of correct predictions, and the number of images (empty bins hold NaN and 0)."""

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray


def reliability_bins(probabilities: torch.Tensor, labels: torch.Tensor) -> ReliabilityBins:
    """The bins expected_calibration_error averages over: [low, high) each, as torchmetrics
    bins them, except that a top probability of exactly 1 joins the last bin here (torchmetrics
    gives it a bin of its own, which no diagram could draw)."""
    confidence, predicted = probabilities.float().max(dim=1)
    confidence = confidence.numpy().astype(np.float64)
    correct = (predicted == labels).numpy().astype(np.float64)
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, CALIBRATION_BINS - 1)
    count = np.bincount(index, minlength=CALIBRATION_BINS)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, CALIBRATION_BINS) / count
        accuracy = np.bincount(index, correct, CALIBRATION_BINS) / count
    return ReliabilityBins(edges, mean_confidence, accuracy, count)
