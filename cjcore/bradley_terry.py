"""Bradley-Terry fits with the judge's position preference: scores, standard errors, reliability, misfit.

The model is P(essay shown first wins) = sigmoid(s_A − s_B + h): one score per essay plus `h`, the
judge's log-odds preference for position A, fitted jointly (DESIGN §4.2 `position`). Rankings and grade
projections use these corrected scores. The estimate is the MAP under an isotropic Gaussian prior
(alpha·I on scores and h), so an essay that won or lost every comparison, or a disconnected comparison
graph, still gives finite scores; the prior also makes the scores sum to zero at the optimum.
choix's spectral estimate (no position term; milliseconds where its own optimizer takes seconds for
hundreds of essays) gives the starting point; Newton steps on the convex log-posterior finish the joint
fit in a few iterations. Standard errors are sqrt(diag) of the inverse Hessian (the
Fisher information plus the prior), projected onto the sum-to-zero constraint for the scores.

Held essays (`fixed`: a ruler's anchors, DESIGN §4.6) keep the scores they were calibrated at; only the
other essays and h are fitted, on the ruler's scale (no re-centring), each with the prior N(0, 1/alpha).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import choix
import numpy as np

from cjcore.contracts import Comparison, Winner
from cjcore.scores import BTFit

# Prior precision on scores: N(0, 1/0.3), sd 1.8 logits, about the spread of a real cohort. Weaker priors
# let sparse early rounds blow scores up, which misleads adaptive pairing (README).
DEFAULT_ALPHA = 0.3
MAX_NEWTON_STEPS = 50
MAX_STEP = 5.0  # logits; keeps Newton from a zero start on near-separable data inside the prior's reach
TOLERANCE = 1e-9
SPLIT_HALF_REPEATS = 8  # up to 300 essays; fewer above (each split is two fits: ~1.7 s at 1,000 essays)


def fit(
    essay_ids: Sequence[str], comparisons: Sequence[Comparison], alpha: float = DEFAULT_ALPHA,
    fixed: Mapping[str, tuple[float, float]] | None = None,
) -> BTFit:
    """`fixed`: essay id → (score, se) held at a ruler's calibration; those essays are not fitted."""
    ids = tuple(essay_ids)
    index = {e: i for i, e in enumerate(ids)}
    n = len(ids)
    fixed = {e: v for e, v in (fixed or {}).items() if e in index}
    held = np.array([e in fixed for e in ids] + [False])  # h is always fitted
    free = np.flatnonzero(~held)
    valid = [c for c in comparisons if c.winner in (Winner.ESSAY_A, Winner.ESSAY_B)]
    a = np.array([index[c.essay_a_id] for c in valid], dtype=np.int64)
    b = np.array([index[c.essay_b_id] for c in valid], dtype=np.int64)
    a_won = np.array([c.winner is Winner.ESSAY_A for c in valid], dtype=float)
    x = np.zeros(n + 1)
    for e, (s, _) in fixed.items():
        x[index[e]] = s
    if valid and not fixed:
        winners, losers = np.where(a_won > 0, a, b), np.where(a_won > 0, b, a)
        start = np.asarray(choix.lsr_pairwise(n, list(zip(winners.tolist(), losers.tolist(), strict=True)),
                                              alpha=alpha), dtype=float)
        x[:n] = start - start.mean()
    for _ in range(MAX_NEWTON_STEPS if valid else 0):
        grad, hess = _gradient_and_hessian(x, a, b, a_won, alpha)
        step = np.linalg.solve(hess[np.ix_(free, free)], grad[free])
        step *= min(1.0, MAX_STEP / max(float(np.max(np.abs(step))), 1e-300))
        x[free] -= step
        if np.max(np.abs(step)) < TOLERANCE:
            break
    _, hess = _gradient_and_hessian(x, a, b, a_won, alpha)
    cov_free = np.linalg.inv(hess[np.ix_(free, free)])
    var = np.zeros(n + 1)
    var[free] = np.diag(cov_free)
    if fixed:
        scores = x[:n]
        for e, (_, se_e) in fixed.items():
            var[index[e]] = se_e**2
    else:  # report score SEs under sum-to-zero
        centre = np.eye(n) - np.full((n, n), 1.0 / n)
        var[:n] = np.diag(centre @ cov_free[:n, :n] @ centre)
        scores = x[:n] - x[:n].mean()
    se = np.sqrt(np.clip(var[:n], 0.0, None))
    infit, outfit, judge = _misfit(x, a, b, a_won, n)
    fitted = ~held[:n]
    return BTFit(ids, tuple(scores.tolist()), tuple(se.tolist()), reliability(scores[fitted], se[fitted]),
                 len(valid), float(x[n]), float(np.sqrt(max(var[n], 0.0))), tuple(infit), tuple(outfit), *judge)


def _gradient_and_hessian(
    x: np.ndarray, a: np.ndarray, b: np.ndarray, a_won: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """Of the negative log-posterior; the last coordinate of x is h. Convex, so plain Newton converges."""
    n = len(x) - 1
    p = 1.0 / (1.0 + np.exp(-(x[a] - x[b] + x[n])))
    r = p - a_won
    w = p * (1.0 - p)
    grad = alpha * x
    np.add.at(grad, a, r)
    np.add.at(grad, b, -r)
    grad[n] += r.sum()
    hess = alpha * np.eye(n + 1)
    h = np.full_like(a, n)
    for i, j, sign in ((a, a, 1), (b, b, 1), (a, b, -1), (b, a, -1), (a, h, 1), (h, a, 1), (b, h, -1), (h, b, -1)):
        np.add.at(hess, (i, j), sign * w)
    hess[n, n] += w.sum()
    return grad, hess


def _misfit(x: np.ndarray, a: np.ndarray, b: np.ndarray, a_won: np.ndarray, n: int) -> tuple[list, list, tuple]:
    """Per essay, over its valid comparisons: infit = Σ residual² / Σ variance (information-weighted),
    outfit = mean of squared standardised residuals. Both expect 1 for a consistently judged essay;
    None where an essay has no valid comparison. Also (infit, outfit) over every verdict: the judge's."""
    p = 1.0 / (1.0 + np.exp(-(x[a] - x[b] + x[n])))
    sq = (a_won - p) ** 2
    w = p * (1.0 - p)
    z2 = sq / np.maximum(w, 1e-12)
    num, den, z2sum, count = (np.zeros(n) for _ in range(4))
    for side in (a, b):  # the residual of B's outcome is minus A's: same square, same variance
        np.add.at(num, side, sq)
        np.add.at(den, side, w)
        np.add.at(z2sum, side, z2)
        np.add.at(count, side, 1.0)
    infit = [float(num[i] / den[i]) if count[i] else None for i in range(n)]
    outfit = [float(z2sum[i] / count[i]) if count[i] else None for i in range(n)]
    judge = (float(sq.sum() / w.sum()), float(z2.mean())) if len(a) else (None, None)
    return infit, outfit, judge


def reliability(scores: np.ndarray, se: np.ndarray) -> float:
    """Share of the estimated scores' variance that is true variance, as suits shrunk (MAP) estimates:
    var / (var + mean SE²). The classical SSR, (var − mean SE²) / var, assumes unshrunk estimates and
    reads far too low at few comparisons per essay (README "Reliability")."""
    if len(scores) < 2:
        return 0.0
    observed = float(np.var(scores, ddof=1))
    error = float(np.mean(np.square(se)))
    return 0.0 if observed + error <= 0.0 else observed / (observed + error)


def ssr_classic(scores: Sequence[float], se: Sequence[float]) -> float:
    """The classical scale separation reliability, for comparison in `bench pairing` only."""
    observed = float(np.var(scores, ddof=1)) if len(scores) > 1 else 0.0
    if observed <= 0.0:
        return 0.0
    return max(0.0, min(1.0, (observed - float(np.mean(np.square(se)))) / observed))


def split_half(
    essay_ids: Sequence[str], comparisons: Sequence[Comparison], alpha: float = DEFAULT_ALPHA,
    fixed: Mapping[str, tuple[float, float]] | None = None, repeats: int | None = None, seed: int = 0,
) -> float | None:
    """Split the valid comparisons into random halves, fit each, correlate the fitted essays' scores and
    correct to the full length (Spearman–Brown, 2r / (1 + r)); the mean over `repeats` splits. None with
    too little data to say (fewer than 3 fitted essays or 4 verdicts)."""
    valid = [c for c in comparisons if c.winner in (Winner.ESSAY_A, Winner.ESSAY_B)]
    fitted = [e for e in essay_ids if e not in (fixed or {})]
    if len(fitted) < 3 or len(valid) < 4:
        return None
    rng = random.Random(seed)
    out = []
    if repeats is None:
        repeats = max(2, min(SPLIT_HALF_REPEATS, SPLIT_HALF_REPEATS * 300 // len(essay_ids)))
    for _ in range(repeats):
        shuffled = valid[:]
        rng.shuffle(shuffled)
        half = len(shuffled) // 2
        one, two = (fit(essay_ids, part, alpha, fixed).score_of() for part in (shuffled[:half], shuffled[half:]))
        x, y = [one[e] for e in fitted], [two[e] for e in fitted]
        if np.std(x) == 0 or np.std(y) == 0:
            out.append(0.0)
            continue
        r = float(np.corrcoef(x, y)[0, 1])
        out.append(max(0.0, 2 * r / (1 + r)) if r > -1 else 0.0)
    return float(np.mean(out))
