"""`launch.py bench pairing`: assessment quality on the simulated judge, with known truth.

ENG5-shaped batches (the sample's 12 anchors, two per grade F–A, plus students whose latent quality is
drawn across the anchors' range) run round by round through the system's own pure parts: `pairing`,
`bradley_terry.fit`, `completion.decide` and `grade_projection.project`, judged by the simulated
provider's `Judge` (logit = q(A) − q(B) + bias + N(0, noise²)). No Ray and no database: which pairs are
chosen and when a batch stops do not depend on the orchestration, and this way many seeds take seconds.

Sections (each a table; medians or shares over seeds):
- `strategies`: random versus adaptive pairing, comparisons to reach Spearman ≥ 0.9 with the truth.
- `stop`: the stop rule before (max score change < 0.1, else 95% of all pairs) and after (reliability at
  its target after a round with new valid verdicts, ≥ 4 per essay), at judge noise 0.2, 0.5 and 1.0.
- `reliability`: reliability for MAP scores, the classical SSR and split-half, each beside r² with the truth.
- `calibration`: grade projections with open and with bounded outer bands: exact and within-one accuracy,
  Brier score, calibration error of the top probability.
- `misfit`: how often one essay judged erratically is flagged, and how often consistent ones are.
- `ruler`: students graded against a ruler calibrated once versus with the anchors inline.
- `reliable_test`: how often the end-to-end reliability test's scenario would miss `reliable`, over seeds.
- `rounds`: round trips and comparisons to the stop for a 24-essay batch at target 0.85, Messages-mode rounds
  (1 pair per essay) beside Message Batches-mode rounds (2.5), where each round trip can take hours.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import random
import statistics
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cjcore import bradley_terry, pairing
from cjcore.batch_book import BatchBook, Outcome
from cjcore.completion import Policy, decide, round_cap
from cjcore.contracts import GRADE_SCALE, Comparison, Counters, PlannedPair, Winner, denominator, usable_pairs
from cjcore.grade_projection import Anchor, Projection, boundaries, project
from cjcore.misfit import misfit_flags
from cjcore.retry import Attempt
from cjcore.sample import eng5_quality, eng5_request
from cjcore.scores import BTFit, max_score_change, spearman
from simprovider.judge import Judge

SPEARMAN_TARGET = 0.9


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


def _random_round(ids: list[str], attempted: Counter[pairing.Key], size: int, rng: random.Random,
                  held: frozenset[str]) -> list[PlannedPair]:
    all_pairs = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:] if not (a in held and b in held)]
    least = min(attempted.get(pairing.pair_key(a, b), 0) for a, b in all_pairs)
    candidates = [p for p in all_pairs if attempted.get(pairing.pair_key(*p), 0) == least]
    rng.shuffle(candidates)
    return [PlannedPair(a, b) if rng.random() < 0.5 else PlannedPair(b, a) for a, b in candidates[:size]]


def _judge(truth: dict[str, Any], noise: float, bias: float, seed: int) -> Judge:
    # The simulator's judge keys quality by sha256 of the text; here an essay's text is its id.
    return Judge({hashlib.sha256(e.encode()).hexdigest(): q for e, q in truth.items()}, noise, bias,
                 random.Random(f"judge:{seed}"))


def _verdict(judge: Judge, p: PlannedPair) -> Comparison:
    a_won, _ = judge.a_wins(p.essay_a_id, p.essay_b_id)
    return Comparison(p.essay_a_id, p.essay_b_id, Winner.ESSAY_A if a_won else Winner.ESSAY_B)


@dataclass
class Batch:
    """One simulated batch, round by round, as a coordinator runs it."""

    ids: list[str]
    judge: Judge
    strategy: str
    seed: int
    budget: int
    fixed: dict[str, tuple[float, float]] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    fit: BTFit | None = None
    pairs_per_essay: float = 1.0  # per round (CJ_PAIRS_PER_ESSAY_PER_ROUND)

    def rounds(self) -> Iterator[tuple[BTFit, float | None]]:
        """After each round: the fit and the largest score change since the previous one. The rounds are the
        coordinator's own bookkeeping (cjcore.batch_book), fed by the simulated judge instead of the pool."""
        n = len(self.ids)
        policy = Policy(threshold_pct=100, stability_threshold=0.0, max_iterations=10**9)
        book = BatchBook(batch_id=self.strategy, essay_ids=self.ids, policy=policy, held=frozenset(self.fixed),
                         seed=self.seed, pairs_per_essay=self.pairs_per_essay)
        counters = Counters(total_budget=self.budget)
        while counters.submitted < self.budget:
            if self.strategy == "adaptive" or not book.attempted:
                planned = book.plan_round(counters)
            else:
                size = pairing.round_size(n, 1.0, self.budget - counters.submitted,
                                          usable_pairs(n, len(self.fixed)) - len(book.attempted))
                rng = pairing.round_rng(self.seed, self.strategy, counters.iterations + 1)
                planned = _random_round(self.ids, book.attempted, size, rng, book.held)
            rows = [Attempt(f"{counters.iterations + 1}-{i}", p.essay_a_id, p.essay_b_id, 1)
                    for i, p in enumerate(planned)]
            book.sent(rows)
            verdicts = [_verdict(self.judge, p) for p in planned]
            self.comparisons.extend(verdicts)
            counters = Counters(self.budget, counters.submitted + len(rows), counters.completed + len(rows), 0,
                                counters.iterations + 1)
            book.record((Outcome(r.correlation_id, v.winner) for r, v in zip(rows, verdicts, strict=True)), now=0.0)
            self.fit = bradley_terry.fit(self.ids, self.comparisons, fixed=self.fixed)
            change = max_score_change(book.last_scores, self.fit.score_of())
            book.fitted(self.fit, counters)
            yield self.fit, change


def eng5_batch(students: int, seed: int, noise: float, bias: float, strategy: str = "adaptive",
               budget: int | None = None, erratic: float = 0.0) -> tuple[Batch, dict[str, float], dict[str, str],
                                                                       dict[str, str]]:
    truth, anchors, true_grade = eng5_shaped(students, seed)
    judged: dict[str, Any] = dict(truth)
    if erratic:  # the first student is judged with noise of its own (DESIGN §4.5)
        judged["student-01"] = {"quality": truth["student-01"], "noise": erratic}
    ids = sorted(truth)
    n = len(ids)
    return (Batch(ids, _judge(judged, noise, bias, seed), strategy, seed, budget or n * (n - 1) // 2),
            truth, anchors, true_grade)


def _accuracy(fit: BTFit, truth: dict[str, float], only: list[str] | None = None) -> tuple[float, float]:
    """(Spearman, r²) of the fit's scores with the truth, over `only` (default every essay)."""
    s = fit.score_of()
    keys = only or list(truth)
    r = float(np.corrcoef([truth[e] for e in keys], [s[e] for e in keys])[0, 1])
    return spearman([truth[e] for e in keys], [s[e] for e in keys]), r * r


def _projections(fit: BTFit, anchors: dict[str, str], true_grade: dict[str, str], open_ends: bool = False,
                 bounds: tuple[Any, Any] | None = None) -> list[Projection]:
    s, se = fit.score_of(), fit.se_of()
    return project({e: (s[e], se[e]) for e in true_grade}, [Anchor(a, g, s[a], se[a]) for a, g in anchors.items()],
                   GRADE_SCALE, bounds, open_ends)


def _median(values: Sequence[float], digits: int = 3) -> float:
    return round(float(statistics.median(values)), digits)


# -- sections -------------------------------------------------------------------------------------------


def strategies(args: argparse.Namespace) -> list[dict[str, Any]]:
    table = []
    for students in args.students:
        for strategy in ("random", "adaptive"):
            reached = []
            for seed in range(args.seeds):
                batch, truth, _, _ = eng5_batch(students, seed, args.noise, args.position_bias, strategy)
                reached.append(next((len(batch.comparisons) for fit, _ in batch.rounds()
                                     if _accuracy(fit, truth)[0] >= SPEARMAN_TARGET), len(batch.comparisons)))
            n = students + 12
            table.append({"students": students, "strategy": strategy, "comparisons_to_spearman_0.9": _median(reached),
                          "per_essay": round(2 * statistics.median(reached) / n, 1)})
    return table


def _reliability_rule(policy: Policy, c: Counters, n: int, ch: float | None, fit: BTFit, new: int) -> str | None:
    return decide(c, n, ch, policy, new_valid=new, reliability=fit.ssr).reason


def _legacy_stop(counters: Counters, n: int, change: float | None) -> str | None:
    """The rule before: stable below 0.1 logits (whatever the round added), else 95% of every pair."""
    if change is not None and counters.completed > 0 and change < 0.1:
        return "stable"
    if counters.completed >= 0.95 * denominator(counters.total_budget, n):
        return "threshold"
    return "budget" if counters.submitted >= counters.total_budget else None


def stop_rule(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Where each rule stops a 36-essay batch (budget 1,000 > its 630 pairs), position bias 0.8."""
    table = []
    students, budget, bias = 24, 1000, 0.8
    rules: dict[str, Callable[[Counters, int, float | None, BTFit, int], str | None]] = {
        "before: change < 0.1": lambda c, n, ch, fit, new: _legacy_stop(c, n, ch)}
    for target in (0.85, 0.9):
        policy = Policy(threshold_pct=95, stability_threshold=0.1, max_iterations=10_000, target_reliability=target)
        rules[f"after: reliability ≥ {target}"] = functools.partial(_reliability_rule, policy)
    for noise in (0.2, 0.5, 1.0):
        for name, rule in rules.items():
            stops, rhos, reasons = [], [], Counter[str]()
            for seed in range(args.seeds):
                batch, truth, _, _ = eng5_batch(students, seed, noise, bias, budget=budget)
                n, before = len(batch.ids), 0
                for fit, change in batch.rounds():
                    done = len(batch.comparisons)
                    c = Counters(budget, done, done, 0, 0)
                    reason = rule(c, n, change, fit, done - before)
                    before = done
                    if reason or done >= n * (n - 1) // 2:
                        reasons[reason or "all pairs"] += 1
                        stops.append(done)
                        rhos.append(_accuracy(fit, truth)[0])
                        break
            table.append({"noise": noise, "rule": name, "per_essay_at_stop": round(2 * statistics.median(stops) / n, 1),
                          "comparisons_range": [min(stops), max(stops)], "spearman": _median(rhos),
                          "share_spearman_ge_0.9": round(sum(r >= SPEARMAN_TARGET for r in rhos) / len(rhos), 2),
                          "reasons": dict(reasons)})
    return table


def round_trips(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Round trips (rounds) and comparisons to a stop, Messages-mode rounds beside Message Batches-mode rounds: an
    ENG5 batch of 24 essays (12 anchors, 12 students), target reliability 0.85, the stop rule as the
    coordinator applies it (the default policy: threshold 95%, stability 0.1, ≥ 4 valid per essay)."""
    from cjcore.settings import BATCHES_PAIRS_PER_ESSAY

    table = []
    policy = Policy(threshold_pct=95, stability_threshold=0.1, max_iterations=20, target_reliability=0.85)
    for mode, per_round in (("messages", 1.0), ("batches", BATCHES_PAIRS_PER_ESSAY)):
        trips, comps, rhos, reasons = [], [], [], Counter[str]()
        for seed in range(args.seeds):
            batch, truth, _, _ = eng5_batch(12, seed, args.noise, args.position_bias, budget=200)
            batch.pairs_per_essay = per_round
            n, before = len(batch.ids), 0
            for rounds, (fit, change) in enumerate(batch.rounds(), start=1):
                done = len(batch.comparisons)
                c = Counters(200, done, done, 0, rounds)
                reason = decide(c, n, change, policy, new_valid=done - before, reliability=fit.ssr).reason
                before = done
                if reason:
                    reasons[reason] += 1
                    trips.append(rounds)
                    comps.append(done)
                    rhos.append(_accuracy(fit, truth)[0])
                    break
        table.append({"mode": mode, "pairs_per_essay_per_round": per_round, "round_trips": _median(trips, 1),
                      "round_trips_max": max(trips), "comparisons": _median(comps, 1), "spearman": _median(rhos),
                      "reasons": dict(reasons)})
    return table


def reliable_test(args: argparse.Namespace) -> list[dict[str, Any]]:
    """How often `test_an_eng5_batch_stops_when_its_reliability_reaches_the_target_before_its_budget` would miss
    over seeds: the ENG5 sample (24 essays), judge noise 0.5 and position bias 0.5, budget 276 (every pair),
    threshold 100%, target 0.85, Messages-mode rounds. The test itself runs one seeded batch."""
    policy = Policy(threshold_pct=100, stability_threshold=0.1, max_iterations=round_cap(20, 276, 24, 1.0),
                    target_reliability=0.85)
    reasons, stops = Counter[str](), []
    for seed in range(args.seeds):
        batch, _, _, _ = eng5_batch(12, seed, 0.5, 0.5, budget=276)
        before = 0
        for rounds, (fit, change) in enumerate(batch.rounds(), start=1):
            done = len(batch.comparisons)
            reason = decide(Counters(276, done, done, 0, rounds), len(batch.ids), change, policy,
                            new_valid=done - before, reliability=fit.ssr).reason
            before = done
            if reason or done >= 276:
                reasons[reason or "all pairs"] += 1
                stops.append(done)
                break
    missed = args.seeds - reasons["reliable"]
    return [{"seeds": args.seeds, "reliable": reasons["reliable"], "missed": missed,
             "miss_rate": round(missed / args.seeds, 4), "reasons": dict(reasons),
             "comparisons_median": _median(stops, 1), "comparisons_max": max(stops)}]


def reliability(args: argparse.Namespace) -> list[dict[str, Any]]:
    """At 5, 10 and 15 comparisons per essay: each reliability estimate beside r² with the truth."""
    table = []
    students = args.students[0]
    n = students + 12
    for strategy in ("random", "adaptive"):
        for per_essay in (5, 10, 15):
            rows: dict[str, list[float]] = {k: [] for k in ("map", "ssr_classic", "split_half", "r2_truth")}
            for seed in range(args.seeds):
                batch, truth, _, _ = eng5_batch(students, seed, args.noise, args.position_bias, strategy,
                                                budget=per_essay * n // 2)
                for _ in batch.rounds():
                    pass
                fit = batch.fit
                assert fit is not None
                rows["map"].append(fit.ssr)
                rows["ssr_classic"].append(bradley_terry.ssr_classic(fit.scores, fit.se))
                rows["split_half"].append(bradley_terry.split_half(batch.ids, batch.comparisons, seed=seed) or 0.0)
                rows["r2_truth"].append(_accuracy(fit, truth)[1])
            table.append({"strategy": strategy, "per_essay": per_essay, **{k: _median(v) for k, v in rows.items()},
                          "map_minus_r2": _median([a - b for a, b in zip(rows["map"], rows["r2_truth"], strict=True)])})
    return table


def _grade_scores(pairs: list[tuple[Projection, str]]) -> dict[str, Any]:
    idx = {g: i for i, g in enumerate(GRADE_SCALE)}
    conf = np.array([p.confidence for p, _ in pairs])
    ok = np.array([p.grade == t for p, t in pairs])
    bins = np.clip((conf * 10).astype(int), 0, 9)
    ece = sum(abs(conf[bins == k].mean() - ok[bins == k].mean()) * np.sum(bins == k) for k in range(10)
              if np.any(bins == k)) / len(pairs)
    ends = [(p, t) for p, t in pairs if p.grade in (GRADE_SCALE[0], GRADE_SCALE[-1])]
    return {
        "exact": round(float(ok.mean()), 3),
        "within_one": round(float(np.mean([abs(idx[p.grade] - idx[t]) <= 1 for p, t in pairs])), 3),
        "brier": round(float(np.mean([sum((p.probabilities.get(g, 0.0) - (g == t)) ** 2 for g in GRADE_SCALE)
                                      for p, t in pairs])), 4),
        "top_prob_calibration_error": round(float(ece), 4),
        "ends_projected": len(ends), "ends_true": sum(t in (GRADE_SCALE[0], GRADE_SCALE[-1]) for _, t in pairs),
        "ends_confidence": round(float(np.mean([p.confidence for p, _ in ends])), 3) if ends else None,
        "ends_accuracy": round(float(np.mean([p.grade == t for p, t in ends])), 3) if ends else None,
    }


def calibration(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Adaptive batches stopped at 10 comparisons per essay; projections with open and bounded outer bands."""
    table = []
    students = args.students[0]
    for noise in (0.2, 0.5, 1.0):
        found: dict[bool, list[tuple[Projection, str]]] = {True: [], False: []}
        for seed in range(args.seeds * 4):  # a grade per student: more seeds for the probabilities
            batch, _, anchors, true_grade = eng5_batch(students, seed, noise, args.position_bias,
                                                       budget=10 * (students + 12) // 2)
            for _ in batch.rounds():
                pass
            assert batch.fit is not None
            for open_ends in (True, False):
                found[open_ends] += [(p, true_grade[p.essay_id])
                                     for p in _projections(batch.fit, anchors, true_grade, open_ends)]
        for open_ends in (True, False):
            table.append({"noise": noise, "outer_bands": "open (before)" if open_ends else "bounded (after)",
                          "projections": len(found[open_ends]), **_grade_scores(found[open_ends])})
    return table


def misfit(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One student judged with noise of its own (4 logits: near a coin flip) among consistent essays."""
    table = []
    students = args.students[0]
    n = students + 12
    for per_essay in (10, 20):
        hit, false, consistent, hit_out = 0, 0, 0, 0
        for seed in range(args.seeds * 4):
            batch, _, _, _ = eng5_batch(students, seed, args.noise, args.position_bias, budget=per_essay * n // 2,
                                        erratic=4.0)
            for _ in batch.rounds():
                pass
            assert batch.fit is not None
            flags = dict(zip(batch.ids, misfit_flags(batch.fit.infit), strict=True))
            hit += flags["student-01"]
            hit_out += dict(zip(batch.ids, misfit_flags(batch.fit.outfit), strict=True))["student-01"]
            false += sum(v for k, v in flags.items() if k != "student-01")
            consistent += len(flags) - 1
        table.append({"per_essay": per_essay, "batches": args.seeds * 4,
                      "erratic_flagged": round(hit / (args.seeds * 4), 2),
                      "erratic_flagged_by_outfit": round(hit_out / (args.seeds * 4), 2),
                      "consistent_flagged": round(false / consistent, 3)})
    return table


def _calibrate(anchors: dict[str, str], judge: Judge) -> tuple[dict[str, tuple[float, float]], Any]:
    """A ruler as `anchors register` makes one: every anchor pair judged once (A/B a fair coin), fitted."""
    ref = sorted(anchors)
    rng = random.Random(f"calibrate:{ref}")
    verdicts = [_verdict(judge, PlannedPair(a, b) if rng.random() < 0.5 else PlannedPair(b, a))
                for i, a in enumerate(ref) for b in ref[i + 1:]]
    cal = bradley_terry.fit(ref, verdicts)
    fixed = {a: (s, se) for a, s, se in zip(cal.essay_ids, cal.scores, cal.se, strict=True)}
    return fixed, boundaries([Anchor(a, anchors[a], *fixed[a]) for a in ref], GRADE_SCALE)


def ruler(args: argparse.Namespace) -> list[dict[str, Any]]:  # noqa: C901 - a bench's script, read top down
    """Two batches of one assignment, 16 students each, 6 of them in both, graded with the anchors inline
    (every pair eligible, anchor–anchor pairs included) or on a ruler calibrated once (then held, never
    paired together): comparisons until the students' Spearman with the truth reaches 0.9, and at 10 and 18
    comparisons per student exact-grade accuracy and, for the shared students, how often the two batches
    agree (same grade, within one grade, scores within 2 SE of each other)."""
    students, shared = 16, 6
    reads = (10 * students, 18 * students)  # comparisons per batch at which grades are read (a ruler batch: 312 pairs)
    out = []
    for mode in ("inline", "ruler"):
        to_target: list[float] = []
        found: dict[int, dict[str, list[float]]] = {r: {"exact": [], "same": [], "one": [], "se": []} for r in reads}
        for seed in range(args.seeds * 4):  # 6 shared students a seed: more seeds for the agreement shares
            truth, anchors, true_grade = eng5_shaped(2 * students - shared, seed)
            judge = _judge(truth, args.noise, args.position_bias, seed)
            fixed, bounds = _calibrate(anchors, judge) if mode == "ruler" else ({}, None)
            pupils = sorted(true_grade)
            placed: list[dict[int, tuple[dict[str, float], dict[str, float], dict[str, str]]]] = []
            for k, group in enumerate((pupils[:students], pupils[:shared] + pupils[students:])):
                ids = sorted([*anchors, *group])
                usable = usable_pairs(len(ids), len(fixed))
                batch = Batch(ids, judge, "adaptive", 100 * seed + k, budget=usable, fixed=fixed)
                reached, snaps = None, {}
                for fit, _ in batch.rounds():
                    if reached is None and _accuracy(fit, truth, group)[0] >= SPEARMAN_TARGET:
                        reached = len(batch.comparisons)
                    for r in reads:
                        if r not in snaps and len(batch.comparisons) >= r:
                            grades = {p.essay_id: p.grade for p in _projections(
                                fit, anchors, {e: true_grade[e] for e in group}, bounds=bounds)}
                            found[r]["exact"].append(float(np.mean([grades[e] == true_grade[e] for e in group])))
                            snaps[r] = (fit.score_of(), fit.se_of(), grades)
                    if reached is not None and len(snaps) == len(reads):
                        break
                to_target.append(reached or len(batch.comparisons))
                placed.append(snaps)
            for r in reads:
                (s1, se1, g1), (s2, se2, g2) = placed[0][r], placed[1][r]
                for e in pupils[:shared]:
                    gap = abs(GRADE_SCALE.index(g1[e]) - GRADE_SCALE.index(g2[e]))
                    found[r]["same"].append(gap == 0)
                    found[r]["one"].append(gap <= 1)
                    found[r]["se"].append(abs(s1[e] - s2[e]) <= 2 * float(np.hypot(se1[e], se2[e])))
        for r in reads:
            f = found[r]
            out.append({"anchors": mode, "comparisons_to_student_spearman_0.9": _median(to_target),
                        "grades_read_at_per_student": r // students, "exact_grade": _median(f["exact"]),
                        "shared_same_grade": round(float(np.mean(f["same"])), 2),
                        "shared_within_one_grade": round(float(np.mean(f["one"])), 2),
                        "shared_scores_within_2se": round(float(np.mean(f["se"])), 2)})
    return out


SECTIONS: dict[str, Callable[[argparse.Namespace], list[dict[str, Any]]]] = {
    "strategies": strategies, "stop": stop_rule, "reliability": reliability, "calibration": calibration,
    "misfit": misfit, "ruler": ruler, "rounds": round_trips, "reliable_test": reliable_test,
}


def run_pairing_bench(args: argparse.Namespace) -> dict[str, Any]:
    chosen = args.sections or list(SECTIONS)
    return {"bench": "pairing: assessment quality against the simulated judge's truth (medians over seeds)",
            "seeds": args.seeds, "noise": args.noise, "position_bias": args.position_bias,
            **{name: SECTIONS[name](args) for name in chosen}}


def format_table(report: dict[str, Any]) -> str:
    lines = [report["bench"], f"seeds {report['seeds']}, noise {report['noise']} (where not varied), "
             f"position bias {report['position_bias']}"]
    for name in SECTIONS:
        rows = report.get(name)
        if not rows:
            continue
        cols = list(rows[0])
        lines += ["", f"[{name}]", "  ".join(cols)]
        lines += ["  ".join(str(r.get(c)) for c in cols) for r in rows]
    return "\n".join(lines)


__all__ = ["run_pairing_bench", "format_table", "eng5_shaped", "eng5_batch", "SECTIONS"]
