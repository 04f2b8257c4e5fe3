"""`launch.py bench pairing`: random versus adaptive pairing on the simulated judge, with known truth.

An ENG5-shaped batch (the sample's 12 anchors, two per grade F–A, plus 24–48 students whose latent
quality is drawn across the anchors' range) is run round by round through the system's own pure parts:
`pairing` (first round, `next_round` for adaptive), `bradley_terry.fit` and `grade_projection.project`,
judged by the simulated provider's `Judge` (logit = q(A) − q(B) + bias + N(0, noise²)). No Ray and no
database: which pairs are chosen does not depend on the orchestration, and this way many seeds take
seconds. `random` shares the first round and then draws uniformly among the least-used pairs.

After every round it records Spearman with the truth, SSR, the squared correlation with the truth (what
SSR claims to estimate, so `ssr − r²` shows any inflation by adaptive pairing) and grade accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from cjcore import bradley_terry, pairing
from cjcore.contracts import GRADE_SCALE, Comparison, PlannedPair, Winner
from cjcore.grade_projection import Anchor, project
from cjcore.sample import eng5_quality, eng5_request
from simprovider.judge import Judge

SPEARMAN_TARGET = 0.9
SSR_TARGET = 0.8


@dataclass(frozen=True, slots=True)
class Round:
    comparisons: int
    spearman: float
    ssr: float
    r2_truth: float
    grade_accuracy: float


def eng5_shaped(students: int, seed: int) -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
    """(quality by essay, known grade by anchor, true grade by student). A student's true grade is the
    band its quality falls in, with boundaries midway between the anchors' grade means."""
    quality = eng5_quality()
    anchors = {e["essay_id"]: e["known_grade"] for e in eng5_request()["essays"] if e.get("is_anchor")}
    means = {g: statistics.mean(quality[a] for a, ga in anchors.items() if ga == g) for g in GRADE_SCALE}
    cuts = [(means[lo] + means[hi]) / 2 for lo, hi in zip(GRADE_SCALE, GRADE_SCALE[1:], strict=False)]
    lo, hi = min(quality[a] for a in anchors), max(quality[a] for a in anchors)
    rng = random.Random(f"students:{seed}")
    truth = {a: quality[a] for a in anchors}
    true_grade = {}
    for i in range(students):
        sid = f"student-{i + 1:02d}"
        truth[sid] = rng.uniform(lo, hi)
        true_grade[sid] = GRADE_SCALE[sum(truth[sid] > c for c in cuts)]
    return truth, anchors, true_grade


def _random_round(ids: list[str], attempted: Counter[pairing.Key], size: int, rng: random.Random) -> list[PlannedPair]:
    all_pairs = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]]
    least = min(attempted.get(pairing.pair_key(a, b), 0) for a, b in all_pairs)
    candidates = [p for p in all_pairs if attempted.get(pairing.pair_key(*p), 0) == least]
    rng.shuffle(candidates)
    return [PlannedPair(a, b) if rng.random() < 0.5 else PlannedPair(b, a) for a, b in candidates[:size]]


def _spearman(x: list[float], y: list[float]) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def simulate(strategy: str, students: int, seed: int, noise: float, position_bias: float,
             budget: int | None = None, pairs_per_essay: float = 1.0) -> list[Round]:
    truth, anchors, true_grade = eng5_shaped(students, seed)
    ids = sorted(truth)
    n = len(ids)
    budget = budget or n * (n - 1) // 2
    # The simulator's judge keys quality by sha256 of the text; here an essay's text is its id.
    judge = Judge({hashlib.sha256(e.encode()).hexdigest(): q for e, q in truth.items()}, noise, position_bias,
                  random.Random(f"judge:{seed}"))
    attempted: Counter[pairing.Key] = Counter()
    comparisons: list[Comparison] = []
    scores: dict[str, float] = {}
    ses: dict[str, float] = {}
    out: list[Round] = []
    iteration = 0
    while len(comparisons) < budget:
        iteration += 1
        size = pairing.round_size(n, pairs_per_essay, budget - len(comparisons), n * (n - 1) // 2 - len(attempted))
        rng = pairing.round_rng(seed, strategy, iteration)
        if not attempted:
            planned = pairing.first_round(ids, size, rng)
        elif strategy == "adaptive":
            planned = pairing.next_round(ids, attempted, scores, ses, size, rng)
        else:
            planned = _random_round(ids, attempted, size, rng)
        for p in planned:
            attempted[pairing.pair_key(p.essay_a_id, p.essay_b_id)] += 1
            a_won, _ = judge.a_wins(p.essay_a_id, p.essay_b_id)
            comparisons.append(Comparison(p.essay_a_id, p.essay_b_id, Winner.ESSAY_A if a_won else Winner.ESSAY_B))
        fit = bradley_terry.fit(ids, comparisons)
        scores, ses = fit.score_of(), fit.se_of()
        projections = project({e: (scores[e], ses[e]) for e in true_grade},
                              [Anchor(a, g, scores[a], ses[a]) for a, g in anchors.items()], GRADE_SCALE)
        correct = sum(p.grade == true_grade[p.essay_id] for p in projections)
        r = float(np.corrcoef([truth[e] for e in ids], [scores[e] for e in ids])[0, 1])
        out.append(Round(len(comparisons), _spearman([truth[e] for e in ids], [scores[e] for e in ids]), fit.ssr,
                         r * r, correct / len(true_grade)))
    return out


def first_reaching(rounds: list[Round]) -> Round | None:
    return next((r for r in rounds if r.spearman >= SPEARMAN_TARGET and r.ssr >= SSR_TARGET), None)


def first_spearman(rounds: list[Round]) -> int | None:
    return next((r.comparisons for r in rounds if r.spearman >= SPEARMAN_TARGET), None)


def run_pairing_bench(args: argparse.Namespace) -> dict[str, Any]:
    table = []
    for students in args.students:
        for strategy in ("random", "adaptive"):
            reached = []
            to_spearman = []
            missed = 0
            for seed in range(args.seeds):
                rounds = simulate(strategy, students, seed, args.noise, args.position_bias)
                to_spearman.append(first_spearman(rounds) or rounds[-1].comparisons)
                hit = first_reaching(rounds)
                if hit is None:
                    missed += 1
                else:
                    reached.append(hit)
            n = students + 12
            row: dict[str, Any] = {"students": students, "essays": n, "strategy": strategy, "seeds": args.seeds,
                                   "missed": missed}
            if reached:
                med = {k: statistics.median(getattr(r, k) for r in reached)
                       for k in ("comparisons", "spearman", "ssr", "r2_truth", "grade_accuracy")}
                row.update(comparisons_median=med["comparisons"],
                           comparisons_per_essay=round(2 * med["comparisons"] / n, 1),
                           comparisons_range=[min(r.comparisons for r in reached), max(r.comparisons for r in reached)],
                           comparisons_to_spearman_only=statistics.median(to_spearman),
                           spearman=round(med["spearman"], 3), ssr=round(med["ssr"], 3),
                           r2_truth=round(med["r2_truth"], 3),
                           ssr_inflation=round(statistics.median(r.ssr - r.r2_truth for r in reached), 3),
                           grade_accuracy=round(med["grade_accuracy"], 3))
            table.append(row)
    for students in args.students:
        rand, adapt = (next(r for r in table if r["students"] == students and r["strategy"] == s)
                       for s in ("random", "adaptive"))
        if "comparisons_median" in rand and "comparisons_median" in adapt:
            adapt["saving_vs_random"] = round(1 - adapt["comparisons_median"] / rand["comparisons_median"], 3)
            adapt["saving_vs_random_spearman_only"] = round(
                1 - adapt["comparisons_to_spearman_only"] / rand["comparisons_to_spearman_only"], 3)
    return {"bench": f"pairing: comparisons to reach Spearman ≥ {SPEARMAN_TARGET} with the truth and "
                     f"SSR ≥ {SSR_TARGET}; median over seeds", "noise": args.noise,
            "position_bias": args.position_bias, "table": table}


def format_table(report: dict[str, Any]) -> str:
    head = f"{'students':>8} {'strategy':>9} {'comparisons':>11} {'per essay':>9} {'range':>11} {'spearman':>8} " \
           f"{'ssr':>6} {'r2 truth':>8} {'grade acc':>9} {'missed':>6} {'to ρ only':>9}"
    lines = [report["bench"], f"noise {report['noise']}, position bias {report['position_bias']}", head]
    for r in report["table"]:
        if "comparisons_median" not in r:
            lines.append(f"{r['students']:>8} {r['strategy']:>9} {'never':>11}")
            continue
        rng = f"{r['comparisons_range'][0]}–{r['comparisons_range'][1]}"
        lines.append(f"{r['students']:>8} {r['strategy']:>9} {r['comparisons_median']:>11.0f} "
                     f"{r['comparisons_per_essay']:>9} {rng:>11} {r['spearman']:>8} {r['ssr']:>6} "
                     f"{r['r2_truth']:>8} {r['grade_accuracy']:>9} {r['missed']:>6} "
                     f"{r['comparisons_to_spearman_only']:>9.0f}")
    for r in report["table"]:
        if "saving_vs_random" in r:
            lines.append(f"{r['students']} students: adaptive needs {r['saving_vs_random']:.0%} fewer comparisons "
                         f"than random for both targets, {r['saving_vs_random_spearman_only']:.0%} fewer for "
                         f"Spearman alone")
    return "\n".join(lines)


__all__ = ["simulate", "run_pairing_bench", "format_table", "eng5_shaped", "first_reaching"]
