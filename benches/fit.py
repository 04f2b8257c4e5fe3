"""`launch.py bench fit`: the Bradley-Terry fit's time and peak memory at 500 and 2,000 essays, next to
choix's estimators on the same comparisons (pure: no Ray, no database).

The comparisons are drawn from a simulated truth (scores N(0, 1.5²), a judge with no position preference,
random pairs, `--per-essay` comparisons per essay). choix fits no position term, so its scores are compared
with ours by Spearman with the truth, and by the largest difference from choix's own MAP (`opt_pairwise`,
the same Gaussian prior).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from typing import Any

import choix
import numpy as np

from cjcore import bradley_terry
from cjcore.contracts import Comparison, Winner
from cjcore.scores import spearman


def _comparisons(n: int, per_essay: int, seed: int) -> tuple[list[str], list[float], list[Comparison]]:
    rng = random.Random(seed)
    truth = [rng.gauss(0.0, 1.5) for _ in range(n)]
    ids = [f"e{i:05d}" for i in range(n)]
    comps = []
    for _ in range(n * per_essay // 2):
        i, j = rng.sample(range(n), 2)
        a_wins = rng.random() < 1.0 / (1.0 + math.exp(-(truth[i] - truth[j])))
        comps.append(Comparison(ids[i], ids[j], Winner.ESSAY_A if a_wins else Winner.ESSAY_B))
    return ids, truth, comps


def _timed(call: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _peak_mb(call: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        call()
        return round(tracemalloc.get_traced_memory()[1] / 1e6, 1)
    finally:
        tracemalloc.stop()


def _rho(scores: Any, truth: list[float]) -> float:
    return round(spearman(list(scores), truth), 4)


def run_fit_bench(args: argparse.Namespace) -> dict[str, Any]:
    alpha = bradley_terry.DEFAULT_ALPHA
    penalty = alpha / 2  # choix's penalty is alpha·‖θ‖², ours the prior's alpha·‖θ‖²/2: the same prior
    rows = []
    for n in args.essays:
        ids, truth, comps = _comparisons(n, args.per_essay, seed=n)
        index = {e: i for i, e in enumerate(ids)}
        data = [(index[c.essay_a_id], index[c.essay_b_id]) if c.winner is Winner.ESSAY_A
                else (index[c.essay_b_id], index[c.essay_a_id]) for c in comps]
        ours_fit = partial(bradley_terry.fit, ids, comps, alpha)
        scores_only = partial(bradley_terry.fit, ids, comps, alpha, with_se=False)
        choix_opt = partial(choix.opt_pairwise, n, data, alpha=penalty)
        ours_s, ours = _timed(ours_fit, args.runs)
        scores_s, _ = _timed(scores_only, args.runs)
        lsr_s, lsr = _timed(partial(choix.lsr_pairwise, n, data, alpha=penalty), args.runs)
        ilsr_s, ilsr = _timed(partial(choix.ilsr_pairwise, n, data, alpha=penalty), args.runs)
        opt_s, opt = _timed(choix_opt, args.runs)
        rows.append({
            "essays": n, "comparisons": len(comps),
            "ours_s": round(ours_s, 3), "ours_scores_only_s": round(scores_s, 3),
            "choix_lsr_s": round(lsr_s, 3), "choix_ilsr_s": round(ilsr_s, 3), "choix_opt_s": round(opt_s, 3),
            "ours_peak_mb": _peak_mb(ours_fit),
            "ours_scores_only_peak_mb": _peak_mb(scores_only),
            "choix_opt_peak_mb": _peak_mb(choix_opt),
            "spearman_truth": {"ours": _rho(ours.scores, truth), "choix_lsr": _rho(lsr, truth),
                               "choix_ilsr": _rho(ilsr, truth), "choix_opt": _rho(opt, truth)},
            "max_abs_diff_vs_choix_opt": round(float(np.max(np.abs(np.asarray(ours.scores) - (opt - opt.mean())))), 4),
            "position_bias": round(ours.position_bias, 4), "reliability": round(ours.ssr, 4),
        })
    return {"bench": f"fit: {args.per_essay} comparisons per essay, median of {args.runs} runs", "rows": rows}


def format_table(report: dict[str, Any]) -> str:
    head = (f"{'essays':>7} {'comps':>7} {'ours':>7} {'scores':>7} {'lsr':>7} {'ilsr':>7} {'opt':>7}  "
            f"{'MB ours':>7} {'scores':>7} {'opt':>7}  {'ρ ours':>7} {'ρ opt':>7} {'Δ opt':>7}")
    lines = [report["bench"], "seconds: ours (scores + SEs), ours scores only, choix lsr/ilsr/opt_pairwise; "
             "peak MB; Spearman with the truth; largest |ours − choix opt|", head]
    for r in report["rows"]:
        lines.append(
            f"{r['essays']:>7} {r['comparisons']:>7} {r['ours_s']:>7} {r['ours_scores_only_s']:>7} "
            f"{r['choix_lsr_s']:>7} {r['choix_ilsr_s']:>7} {r['choix_opt_s']:>7}  {r['ours_peak_mb']:>7} "
            f"{r['ours_scores_only_peak_mb']:>7} {r['choix_opt_peak_mb']:>7}  {r['spearman_truth']['ours']:>7} "
            f"{r['spearman_truth']['choix_opt']:>7} {r['max_abs_diff_vs_choix_opt']:>7}")
    return "\n".join(lines)
