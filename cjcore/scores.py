"""Score bookkeeping the coordinator needs, without numpy or choix (a coordinator is one process per
batch, so its imports are kept light): the fit's shape, position statistics, score change."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cjcore.contracts import Comparison, Winner


@dataclass(frozen=True, slots=True)
class BTFit:
    essay_ids: tuple[str, ...]
    scores: tuple[float, ...]  # mean zero, logit scale
    se: tuple[float, ...]
    ssr: float
    n_comparisons: int

    def score_of(self) -> dict[str, float]:
        return dict(zip(self.essay_ids, self.scores, strict=True))

    def se_of(self) -> dict[str, float]:
        return dict(zip(self.essay_ids, self.se, strict=True))


@dataclass(frozen=True, slots=True)
class PositionStats:
    a_wins: int
    b_wins: int
    bias_logit: float  # log-odds that the essay shown first wins, all else equal
    bias_se: float


def position_stats(comparisons: Sequence[Comparison]) -> PositionStats:
    """Share of wins by the essay shown first, as a log-odds with its standard error.

    A/B order is randomized per pair, so essay quality is balanced across positions and this marginal
    log-odds estimates the judge's position preference (attenuated towards zero when scores spread).
    """
    a = sum(1 for c in comparisons if c.winner is Winner.ESSAY_A)
    b = sum(1 for c in comparisons if c.winner is Winner.ESSAY_B)
    # +0.5 (Haldane) keeps the log-odds finite when one side never wins.
    logit = math.log((a + 0.5) / (b + 0.5))
    se = math.sqrt(1.0 / (a + 0.5) + 1.0 / (b + 0.5))
    return PositionStats(a, b, logit, se)


def max_score_change(previous: dict[str, float], current: dict[str, float]) -> float | None:
    """Largest absolute change of any essay's score between two fits; None if there is no previous fit."""
    if not previous or set(previous) != set(current):
        return None
    return max(abs(current[k] - previous[k]) for k in current)
