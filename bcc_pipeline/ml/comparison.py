"""Champion against challenger on the same test images: a paired comparison.

Two accuracies measured on different images differ by chance as much as by skill. Scored on
the same images, only the images where exactly one model is right (the discordant pairs) say
which is better, and the exact McNemar test (a binomial test on those) says whether the
difference is more than chance."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedComparison:
    n: int
    """Images both models were scored on."""
    both_correct: int
    champion_only_correct: int
    challenger_only_correct: int
    p_value: float
    """Exact McNemar test, two-sided: how likely so uneven a split of the discordant pairs is
    if the models were equally good (1.0 without discordant pairs, NaN without images)."""

    @property
    def champion_accuracy(self) -> float:
        return (self.both_correct + self.champion_only_correct) / self.n if self.n else math.nan

    @property
    def challenger_accuracy(self) -> float:
        return (self.both_correct + self.challenger_only_correct) / self.n if self.n else math.nan

    @property
    def discordant(self) -> dict[str, int]:
        return {
            "champion_only_correct": self.champion_only_correct,
            "challenger_only_correct": self.challenger_only_correct,
        }


NOTHING_COMPARED = PairedComparison(0, 0, 0, 0, math.nan)
"""The first model, or a production model that could not be scored."""


def compare_paired(
    champion_correct: np.ndarray, challenger_correct: np.ndarray
) -> PairedComparison:
    """Counts and the exact McNemar p-value of two models' per-image correctness."""
    from scipy.stats import binomtest

    champion, challenger = np.asarray(champion_correct, bool), np.asarray(challenger_correct, bool)
    if champion.shape != challenger.shape:
        raise ValueError(f"scored on different images: {champion.shape} vs {challenger.shape}")
    champion_only = int((champion & ~challenger).sum())
    challenger_only = int((~champion & challenger).sum())
    discordant = champion_only + challenger_only
    if not len(champion):
        p_value = math.nan
    elif discordant == 0:
        p_value = 1.0
    else:
        p_value = float(binomtest(challenger_only, discordant, 0.5).pvalue)
    return PairedComparison(
        n=len(champion),
        both_correct=int((champion & challenger).sum()),
        champion_only_correct=champion_only,
        challenger_only_correct=challenger_only,
        p_value=p_value,
    )


def challenger_shortfall(comparison: PairedComparison, margin: float, alpha: float) -> list[str]:
    """Why the challenger is worse than the champion on the same images; empty when it is no
    worse: at most `margin` below the champion and not significantly worse at level alpha."""
    if comparison.n == 0:
        return ["no test image is untouched by the production model, so they cannot be compared"]
    reasons = []
    gap = comparison.champion_accuracy - comparison.challenger_accuracy
    images_behind = comparison.champion_only_correct - comparison.challenger_only_correct
    same_images = (
        f"on the same {comparison.n} test images ({comparison.challenger_accuracy:.4f} vs "
        f"{comparison.champion_accuracy:.4f})"
    )
    if images_behind > margin * comparison.n + 1e-9:  # in images: no rounding at the boundary
        reasons.append(
            f"the new model is {gap:.4f} less accurate than production {same_images}, "
            f"more than the margin {margin:.4f}"
        )
    elif images_behind > 0 and comparison.p_value < alpha:
        reasons.append(
            f"the new model is significantly worse than production {same_images}: exact "
            f"McNemar p = {comparison.p_value:.4g} < {alpha:g}"
        )
    return reasons
