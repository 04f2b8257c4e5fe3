"""Bradley-Terry fits: scores, standard errors, scale separation reliability.

Scores are the MAP estimate under an isotropic Gaussian prior (choix.opt_pairwise with `alpha`), so an
essay that won or lost every comparison, or a disconnected comparison graph, still gives finite scores.
Standard errors are sqrt(diag) of the inverse Fisher information Σ p(1−p)(e_i−e_j)(e_i−e_j)ᵀ plus the
prior's alpha·I, projected onto the sum-to-zero constraint the scores are reported under.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import choix
import numpy as np

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


def fit(essay_ids: Sequence[str], comparisons: Sequence[Comparison], alpha: float = 0.01) -> BTFit:
    ids = tuple(essay_ids)
    index = {e: i for i, e in enumerate(ids)}
    n = len(ids)
    data: list[tuple[int, int]] = []
    for c in comparisons:
        a, b = index[c.essay_a_id], index[c.essay_b_id]
        if c.winner is Winner.ESSAY_A:
            data.append((a, b))
        elif c.winner is Winner.ESSAY_B:
            data.append((b, a))
    if data:
        params = np.asarray(choix.opt_pairwise(n, data, alpha=alpha), dtype=float)
    else:
        params = np.zeros(n)
    params = params - params.mean()
    se = standard_errors(n, data, params, alpha)
    return BTFit(ids, tuple(params.tolist()), tuple(se.tolist()), ssr(params, se), len(data))


def standard_errors(n: int, data: Sequence[tuple[int, int]], params: np.ndarray, alpha: float) -> np.ndarray:
    info = alpha * np.eye(n)
    for w, l in data:
        p = 1.0 / (1.0 + math.exp(-(params[w] - params[l])))
        v = p * (1.0 - p)
        info[w, w] += v
        info[l, l] += v
        info[w, l] -= v
        info[l, w] -= v
    cov = np.linalg.inv(info)
    centre = np.eye(n) - np.full((n, n), 1.0 / n)  # sum-to-zero projection
    cov = centre @ cov @ centre
    return np.sqrt(np.clip(np.diag(cov), 0.0, None))


def ssr(scores: np.ndarray, se: np.ndarray) -> float:
    """Scale separation reliability: share of observed score variance that is not measurement error."""
    if len(scores) < 2:
        return 0.0
    observed = float(np.var(scores, ddof=1))
    if observed <= 0.0:
        return 0.0
    error = float(np.mean(np.square(se)))
    return max(0.0, min(1.0, (observed - error) / observed))


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
