"""Bradley-Terry on simulated data with a fixed seed and named tolerances."""

import math
import random

import numpy as np
import pytest

from cjcore import bradley_terry
from cjcore.contracts import Comparison, Winner
from cjcore.misfit import misfit_flags
from cjcore.scores import max_score_change, position_wins, spearman

SPEARMAN_MIN = 0.9
SSR_MIN = 0.8


def _simulate(truth, n_comparisons, seed, bias=0.0):
    rng = random.Random(seed)
    ids = list(truth)
    out = []
    for _ in range(n_comparisons):
        a, b = rng.sample(ids, 2)
        p = 1 / (1 + math.exp(-(truth[a] - truth[b] + bias)))
        out.append(Comparison(a, b, Winner.ESSAY_A if rng.random() < p else Winner.ESSAY_B))
    return out


TRUTH = {f"e{i:02d}": q for i, q in enumerate(np.linspace(-2.5, 2.5, 24))}


def test_scores_agree_with_the_truth():
    fit = bradley_terry.fit(list(TRUTH), _simulate(TRUTH, 240, seed=3))
    rho = spearman(list(TRUTH.values()), list(fit.scores))
    print(f"Spearman with truth: {rho:.3f}, SSR {fit.ssr:.3f}")
    assert rho >= SPEARMAN_MIN
    assert fit.ssr >= SSR_MIN
    assert abs(sum(fit.scores)) < 1e-6  # reported under a sum-to-zero constraint


def test_standard_errors_shrink_with_more_comparisons():
    few = bradley_terry.fit(list(TRUTH), _simulate(TRUTH, 60, seed=1))
    many = bradley_terry.fit(list(TRUTH), _simulate(TRUTH, 600, seed=1))
    assert np.mean(many.se) < np.mean(few.se) / 2


def test_one_sided_and_disconnected_data_stay_finite():
    comps = [Comparison("a", "b", Winner.ESSAY_A)] * 5 + [Comparison("c", "d", Winner.ESSAY_B)] * 3
    fit = bradley_terry.fit(["a", "b", "c", "d", "e"], comps)
    assert all(math.isfinite(s) for s in fit.scores + fit.se)
    s = fit.score_of()
    assert s["a"] > s["b"] and s["d"] > s["c"]


def test_no_comparisons_gives_zero_scores_and_zero_ssr():
    fit = bradley_terry.fit(["a", "b", "c"], [])
    assert fit.scores == (0.0, 0.0, 0.0)
    assert fit.ssr == 0.0


def test_errors_are_ignored_by_the_fit():
    comps = [Comparison("a", "b", Winner.ESSAY_A), Comparison("a", "b", Winner.ERROR)]
    assert bradley_terry.fit(["a", "b"], comps).n_comparisons == 1


@pytest.mark.parametrize("bias", [0.0, 0.6, -1.0])
def test_the_judges_position_preference_is_estimated_jointly_with_the_scores(bias):
    comps = _simulate(TRUTH, 3000, seed=5, bias=bias)
    fit = bradley_terry.fit(list(TRUTH), comps)
    print(f"position bias {bias}: estimated {fit.position_bias:.3f} ± {fit.position_bias_se:.3f}")
    assert abs(fit.position_bias - bias) < 3 * fit.position_bias_se
    assert 0.01 < fit.position_bias_se < 0.1
    assert spearman(list(TRUTH.values()), list(fit.scores)) >= SPEARMAN_MIN
    a_wins, b_wins = position_wins(comps)
    assert a_wins + b_wins == 3000
    if bias:
        assert (a_wins > b_wins) == (bias > 0)


def test_scores_are_corrected_for_the_position_preference():
    """Essay x is shown first in every comparison it takes part in; the judge adds +1.5 to A. A fit
    without the position term would credit x with the bias; the joint fit gives x its true score."""
    truth = dict(TRUTH)
    rng = random.Random(8)
    comps = _simulate(truth, 2000, seed=9, bias=1.5)
    x = "e12"
    for _ in range(300):
        other = rng.choice([e for e in truth if e != x])
        p = 1 / (1 + math.exp(-(truth[x] - truth[other] + 1.5)))
        comps.append(Comparison(x, other, Winner.ESSAY_A if rng.random() < p else Winner.ESSAY_B))
    fit = bradley_terry.fit(list(truth), comps)
    true_centred = truth[x] - np.mean(list(truth.values()))
    assert abs(fit.score_of()[x] - true_centred) < 3 * fit.se_of()[x]


@pytest.mark.parametrize(
    ("prev", "cur", "expected"),
    [({}, {"a": 1.0}, None), ({"a": 1.0, "b": 0.0}, {"a": 1.2, "b": -0.05}, 0.2), ({"a": 1}, {"b": 1}, None)],
)
def test_max_score_change(prev, cur, expected):
    got = max_score_change(prev, cur)
    assert got == expected if expected is None else got == pytest.approx(expected)


def test_with_no_valid_verdict_the_ses_are_the_priors_not_zero():
    """Adaptive pairing weighs pairs by their SEs: zeros would make every pair look worthless."""
    fit = bradley_terry.fit(["a", "b", "c"], [Comparison("a", "b", Winner.ERROR)], alpha=0.25)
    assert all(se == pytest.approx(2.0 * math.sqrt(2 / 3)) for se in fit.se)  # sd 2, under sum-to-zero
    assert fit.ssr == 0.0 and fit.infit == (None, None, None)


def test_reliability_for_map_scores_tracks_r2_with_the_truth_where_the_classical_ssr_reads_low():
    comps = _simulate(TRUTH, 60, seed=2)  # 5 comparisons per essay
    fit = bradley_terry.fit(list(TRUTH), comps)
    r2 = float(np.corrcoef(list(TRUTH.values()), fit.scores)[0, 1]) ** 2
    classical = bradley_terry.ssr_classic(fit.scores, fit.se)
    print(f"r² {r2:.3f}, reliability {fit.ssr:.3f}, classical SSR {classical:.3f}")
    assert abs(fit.ssr - r2) < abs(classical - r2)
    half = bradley_terry.split_half(list(TRUTH), _simulate(TRUTH, 600, seed=2))
    assert half is not None and 0.8 < half <= 1.0


def test_an_essay_judged_at_random_is_flagged_as_misfitting():
    rng = random.Random(11)
    ids = list(TRUTH)
    comps = []
    for _ in range(1200):  # 100 comparisons per essay
        a, b = rng.sample(ids, 2)
        p = 0.5 if "e05" in (a, b) else 1 / (1 + math.exp(-(TRUTH[a] - TRUTH[b])))  # e05: a coin flip
        comps.append(Comparison(a, b, Winner.ESSAY_A if rng.random() < p else Winner.ESSAY_B))
    fit = bradley_terry.fit(ids, comps)
    flags = dict(zip(ids, misfit_flags(fit.infit), strict=True))
    infit = dict(zip(ids, fit.infit, strict=True))
    print(f"infit of e05 {infit['e05']:.2f}; others {min(v for k, v in infit.items() if k != 'e05'):.2f}–"
          f"{max(v for k, v in infit.items() if k != 'e05'):.2f}")
    assert flags["e05"] and sum(flags.values()) <= 2
    assert 0.7 < fit.judge_infit < 1.3  # one erratic essay among 24 barely moves the judge's own figure


@pytest.mark.parametrize("held", [False, True], ids=["free", "anchors held"])
def test_the_sparse_fit_is_the_map_and_its_ses_those_of_the_dense_inverse_hessian(held):
    """The oracle written out densely: at the fit's optimum the log-posterior's gradient is zero, and the
    SEs are sqrt(diag) of the inverse of the full Hessian (centred to sum-to-zero when nothing is held)."""
    comps = _simulate(TRUTH, 150, seed=5, bias=0.4)
    ids = list(TRUTH)
    fixed = {ids[0]: (-2.0, 0.1), ids[-1]: (2.2, 0.2)} if held else None
    fit = bradley_terry.fit(ids, comps, fixed=fixed)
    n, alpha = len(ids), bradley_terry.DEFAULT_ALPHA
    x = np.array([*fit.scores, fit.position_bias])  # free: the prior centres them, so these are the optimum
    grad, hess = alpha * x, alpha * np.eye(n + 1)
    for c in comps:
        i, j = ids.index(c.essay_a_id), ids.index(c.essay_b_id)
        p = 1 / (1 + math.exp(-(x[i] - x[j] + x[n])))
        d = np.zeros(n + 1)
        d[[i, j, n]] = 1, -1, 1
        grad += (p - (c.winner is Winner.ESSAY_A)) * d
        hess += p * (1 - p) * np.outer(d, d)
    free = [k for k in range(n + 1) if not (fixed and k in (0, n - 1))]
    assert np.max(np.abs(grad[free])) < 1e-8
    cov = np.linalg.inv(hess[np.ix_(free, free)])
    if held:
        expected = np.sqrt(np.diag(cov))[:-1]
        assert np.allclose(np.array(fit.se)[1:-1], expected, atol=1e-10)
        assert (fit.se[0], fit.se[-1]) == (0.1, 0.2) and (fit.scores[0], fit.scores[-1]) == (-2.0, 2.2)
    else:
        centre = np.eye(n) - 1.0 / n
        expected = np.sqrt(np.diag(centre @ cov[:n, :n] @ centre))
        assert np.allclose(fit.se, expected, atol=1e-10)
    assert math.isclose(fit.position_bias_se, math.sqrt(cov[-1, -1]), abs_tol=1e-10)
