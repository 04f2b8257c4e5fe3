"""Bradley-Terry fits: scores, standard errors, scale separation reliability.

Scores are the MAP estimate under an isotropic Gaussian prior (choix.opt_pairwise with `alpha`), so an
essay that won or lost every comparison, or a disconnected comparison graph, still gives finite scores.
Standard errors are sqrt(diag) of the inverse Fisher information Σ p(1−p)(e_i−e_j)(e_i−e_j)ᵀ plus the
prior's alpha·I, projected onto the sum-to-zero constraint the scores are reported under.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import choix
import numpy as np

from cjcore.contracts import Comparison, Winner
from cjcore.scores import BTFit


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
    for w, lo in data:
        p = 1.0 / (1.0 + math.exp(-(params[w] - params[lo])))
        v = p * (1.0 - p)
        info[w, w] += v
        info[lo, lo] += v
        info[w, lo] -= v
        info[lo, w] -= v
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
