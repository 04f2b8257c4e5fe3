"""Bradley-Terry fits with the judge's position preference: scores, standard errors, reliability, misfit.

The model is P(essay shown first wins) = sigmoid(s_A − s_B + h): one score per essay plus `h`, the
judge's log-odds preference for position A, fitted jointly (DESIGN §4.2 `position`). Rankings and grade
projections use these corrected scores. The estimate is the MAP under an isotropic Gaussian prior
(alpha·I on scores and h), so an essay that won or lost every comparison, or a disconnected comparison
graph, still gives finite scores; the prior also makes the scores sum to zero at the optimum.

Newton's method on the convex log-posterior, with the Hessian kept sparse (one entry per compared pair: a
batch's memory grows with its comparisons, not with essays²) and each step solved by conjugate gradients
(matrix–vector products only). Standard errors are sqrt(diag) of the inverse Hessian (Fisher information
plus prior), projected onto the sum-to-zero constraint for the scores; they need the one dense step, a
Cholesky factor of the final Hessian inverted in place (one 32 MB array, ~0.2 s at 2,000 essays): a random
comparison graph fills in any sparse factorisation (SuperLU kept 2.3 M of the 4 M entries at 2,000 essays,
and was slower). Fits that need only scores (split-half) skip it. `bench fit` times this against choix.

Held essays (`fixed`: a ruler's anchors, DESIGN §4.6) keep the scores they were calibrated at; only the
other essays and h are fitted, on the ruler's scale (no re-centring), each with the prior N(0, 1/alpha).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.linalg
from scipy import sparse
from scipy.linalg import lapack
from scipy.sparse.linalg import cg

from cjcore.contracts import Comparison, Winner
from cjcore.scores import BTFit

# Prior precision on scores: N(0, 1/0.3), sd 1.8 logits, about the spread of a real cohort. Weaker priors
# let sparse early rounds blow scores up, which misleads adaptive pairing (docs/architecture.md,
# "Completion, retries, pairing and position bias").
DEFAULT_ALPHA = 0.3
MAX_NEWTON_STEPS = 50
DENSE_BELOW = 100  # essays: below, Newton steps solve a dense Hessian; above, sparse CG (crossover ~100–150 here)
MAX_STEP = 5.0  # logits; keeps Newton from a zero start on near-separable data inside the prior's reach
TOLERANCE = 1e-9  # on the gradient of the log-posterior
SPLIT_HALF_REPEATS = 8  # each is two scores-only fits: ~0.1 s at 2,000 essays


def fit(  # noqa: C901 - one numerical procedure, its steps in order
    essay_ids: Sequence[str], comparisons: Sequence[Comparison], alpha: float = DEFAULT_ALPHA,
    fixed: Mapping[str, tuple[float, float]] | None = None, *, with_se: bool = True,
) -> BTFit:
    """`fixed`: essay id → (score, se) held at a ruler's calibration; those essays are not fitted.
    with_se=False: scores only (every SE reported as 0), skipping the one dense step."""
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
    dense = n < DENSE_BELOW
    for _ in range(MAX_NEWTON_STEPS if valid else 0):
        grad = _gradient(x, a, b, a_won, alpha)[free]
        if np.max(np.abs(grad)) < TOLERANCE:
            break
        if dense:
            step = np.linalg.solve(_dense_hessian(x, a, b, alpha)[np.ix_(free, free)], grad)
        else:
            hess = _hessian(x, a, b, alpha)[free][:, free]
            step, _ = cg(hess, grad, rtol=1e-12, atol=0.0, M=sparse.diags(1.0 / hess.diagonal()))
        step *= min(1.0, MAX_STEP / max(float(np.max(np.abs(step))), 1e-300))
        x[free] -= step
    var = np.zeros(n + 1)
    if with_se:
        # diag(H⁻¹) from one Cholesky factor, inverted in place (LAPACK potrf, potri: one n² array)
        full = _dense_hessian(x, a, b, alpha)[np.ix_(free, free)] if dense \
            else _hessian(x, a, b, alpha)[free][:, free].toarray()
        factor, info = lapack.dpotrf(np.asfortranarray(full), lower=1, overwrite_a=1)
        if info:
            raise ArithmeticError(f"Bradley-Terry Hessian not positive definite (potrf info {info})")
        if not fixed:  # score SEs under sum-to-zero: diag(CΣC) = Σ_ii − 2(Σ1)_i/n + 1ᵀΣ1/n²
            ones = np.ones(n + 1)
            ones[n] = 0.0
            row_sums = scipy.linalg.cho_solve((factor, True), ones)[:n]
        inverse, info = lapack.dpotri(factor, lower=1, overwrite_c=1)
        var[free] = np.diag(inverse)
        if not fixed:
            var[:n] += -2.0 * row_sums / n + row_sums.sum() / n**2
    if fixed:
        scores = x[:n]
        for e, (_, se_e) in fixed.items():
            var[index[e]] = se_e**2
    else:
        scores = x[:n] - x[:n].mean()
    se = np.sqrt(np.clip(var[:n], 0.0, None))
    infit, outfit, judge = _misfit(x, a, b, a_won, n)
    fitted = ~held[:n]
    return BTFit(ids, tuple(scores.tolist()), tuple(se.tolist()), reliability(scores[fitted], se[fitted]),
                 len(valid), float(x[n]), float(np.sqrt(max(var[n], 0.0))), tuple(infit), tuple(outfit), *judge)


def _gradient(x: np.ndarray, a: np.ndarray, b: np.ndarray, a_won: np.ndarray, alpha: float) -> np.ndarray:
    """Of the negative log-posterior; the last coordinate of x is h. Convex, so plain Newton converges."""
    n = len(x) - 1
    r = _p_first_wins(x, a, b) - a_won
    grad = alpha * x + np.bincount(a, r, n + 1) - np.bincount(b, r, n + 1)
    grad[n] += r.sum()
    return grad


def _hessian(x: np.ndarray, a: np.ndarray, b: np.ndarray, alpha: float) -> sparse.csr_matrix:
    """Sparse: each comparison touches (a, a), (b, b), (a, b), (b, a) and h's row and column."""
    n = len(x) - 1
    rows, cols, data = _entries(x, a, b)
    hess = sparse.coo_matrix((data, (rows, cols)), shape=(n + 1, n + 1)).tocsr()  # duplicates summed
    return (hess + alpha * sparse.identity(n + 1, format="csr")).tocsr()


def _entries(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Hessian's entries (row, column, value; duplicates to be summed) without the prior: each comparison
    touches (a, a), (b, b), (a, b), (b, a) and h's row and column."""
    n = len(x) - 1
    p = _p_first_wins(x, a, b)
    w = p * (1.0 - p)
    h = np.full_like(a, n)
    return (np.concatenate((a, b, a, b, a, h, b, h, h)), np.concatenate((a, b, b, a, h, a, h, b, h)),
            np.concatenate((w, w, -w, -w, w, w, -w, -w, w)))


def _dense_hessian(x: np.ndarray, a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """The same Hessian as a dense array, summed with one bincount: below DENSE_BELOW essays a dense solve
    is faster than building sparse matrices and iterating (a 24-essay fit: 15 ms → 1.9 ms)."""
    n = len(x) - 1
    rows, cols, data = _entries(x, a, b)
    hess = np.bincount(rows * (n + 1) + cols, data, (n + 1) ** 2).astype(float).reshape(n + 1, n + 1)
    hess[np.diag_indices(n + 1)] += alpha
    return hess


def _p_first_wins(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(x[a] - x[b] + x[-1])))


def _misfit(x: np.ndarray, a: np.ndarray, b: np.ndarray, a_won: np.ndarray, n: int) -> tuple[list, list, tuple]:
    """Per essay, over its valid comparisons: infit = Σ residual² / Σ variance (information-weighted),
    outfit = mean of squared standardised residuals. Both expect 1 for a consistently judged essay;
    None where an essay has no valid comparison. Also (infit, outfit) over every verdict: the judge's."""
    p = _p_first_wins(x, a, b)
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
    reads far too low at few comparisons per essay (docs/assessment.md "Reliability, misfit…")."""
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
    for _ in range(repeats or SPLIT_HALF_REPEATS):
        shuffled = valid[:]
        rng.shuffle(shuffled)
        half = len(shuffled) // 2
        one, two = (fit(essay_ids, part, alpha, fixed, with_se=False).score_of()
                    for part in (shuffled[:half], shuffled[half:]))
        x, y = [one[e] for e in fitted], [two[e] for e in fitted]
        if np.std(x) == 0 or np.std(y) == 0:
            out.append(0.0)
            continue
        r = float(np.corrcoef(x, y)[0, 1])
        out.append(max(0.0, 2 * r / (1 + r)) if r > -1 else 0.0)
    return float(np.mean(out))
