"""What a batch's report page shows, as plain data: one row per essay, the grade bands, the figures with
their meaning in a line, and the charts as Vega-Lite specifications (rendered to SVG by the web layer).

Built from the export document (the §4.2 result and every attempt) and, while the batch runs, its status
row; no Ray, no database, so every figure on the page is tested here in milliseconds.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cjcore.completion import completion_pct
from cjcore.contracts import GRADE_SCALE, TERMINAL_STATES, BatchResult, Counters, denominator
from cjcore.grade_projection import Anchor, boundaries, outer_edges

Z95 = 1.959964  # a 95% interval is the score ± Z95 standard errors
LABELLED_ESSAYS = 300  # above this the ranking chart plots by rank without a label per essay (the table has them)
VEGA_LITE = "https://vega.github.io/schema/vega-lite/v5.json"  # an identifier, never fetched
KIND_COLOURS = {"student": "#1f77b4", "anchor": "#2ca02c", "misfit": "#d62728"}


@dataclass(frozen=True, slots=True)
class EssayRow:
    rank: int
    essay_id: str
    score: float
    se: float
    low: float  # the 95% interval
    high: float
    is_anchor: bool
    known_grade: str | None
    grade: str | None  # projected (students, when the batch has anchors)
    probability: float | None  # of that grade
    comparisons: int  # verdicts this essay took part in
    infit: float | None
    misfit: bool

    @property
    def kind(self) -> str:
        return "misfit" if self.misfit else "anchor" if self.is_anchor else "student"


@dataclass(frozen=True, slots=True)
class Band:
    grade: str
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a running batch is against its stop rule (the status row's counters)."""

    rounds: int
    completed: int
    failed: int
    in_flight: int
    budget: int
    denominator: int  # min(budget, n(n-1)/2): what completion is counted against
    completion_pct: float
    threshold_pct: float


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    value: str
    meaning: str


@dataclass
class Report:
    batch_id: str
    state: str
    terminal: bool
    completion_reason: str | None
    essays: list[EssayRow]
    bands: list[Band]
    figures: list[Figure]
    grade_counts: dict[str, int]
    judges: list[dict[str, Any]]
    progress: Progress | None
    charts: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → Vega-Lite spec


def comparisons_per_essay(attempts: list[dict[str, Any]]) -> Counter[str]:
    """Verdicts (not errors) each essay took part in."""
    seen: Counter[str] = Counter()
    for a in attempts:
        if a.get("winner") in ("essay_a", "essay_b"):
            seen[a["essay_a_id"]] += 1
            seen[a["essay_b_id"]] += 1
    return seen


def essay_rows(result: BatchResult, attempts: list[dict[str, Any]]) -> list[EssayRow]:
    projected = {p.essay_id: p for p in result.grade_projections}
    seen = comparisons_per_essay(attempts)
    rows = []
    for r in result.rankings:
        p = projected.get(r.essay_id)
        rows.append(EssayRow(
            rank=r.rank, essay_id=r.essay_id, score=r.score, se=r.se, low=r.score - Z95 * r.se,
            high=r.score + Z95 * r.se, is_anchor=r.is_anchor, known_grade=r.known_grade,
            grade=p.grade if p else None, probability=p.probabilities.get(p.grade) if p else None,
            comparisons=seen[r.essay_id], infit=r.infit, misfit=r.misfit))
    return sorted(rows, key=lambda row: row.rank)


def grade_bands(rows: list[EssayRow]) -> list[Band]:
    """The grade bands the projections used, read off the anchors' scores as grade_projection does (for a
    ruler's held anchors these are its calibrated scores, so the same cuts)."""
    anchors = [Anchor(r.essay_id, r.known_grade, r.score, r.se) for r in rows if r.is_anchor and r.known_grade]
    if not anchors:
        return []
    grades, cuts = boundaries(anchors, GRADE_SCALE)
    if len(grades) < 2:
        return []
    low, high = outer_edges(cuts)
    edges = [low, *cuts, high]
    return [Band(g, edges[i], edges[i + 1]) for i, g in enumerate(grades)]


def progress_of(status: dict[str, Any], n_essays: int) -> Progress:
    counters = Counters(total_budget=int(status["total_budget"]), submitted=int(status["submitted_comparisons"]),
                        completed=int(status["completed_comparisons"]), failed=int(status["failed_comparisons"]),
                        iterations=int(status["current_iteration"]))
    return Progress(
        rounds=counters.iterations, completed=counters.completed, failed=counters.failed,
        in_flight=counters.in_flight, budget=counters.total_budget,
        denominator=denominator(counters.total_budget, n_essays),
        completion_pct=round(completion_pct(counters, n_essays), 1),
        threshold_pct=float(status.get("completion_threshold_pct") or 100.0))


def figures(result: BatchResult, rows: list[EssayRow]) -> list[Figure]:
    rel, pos, cost = result.reliability, result.position, result.cost
    out = [Figure("Reliability (SSR)", f"{rel.ssr:.3f}",
                  f"{rel.ssr:.0%} of the spread of the scores is real difference between essays, the rest "
                  "measurement error; 0.8 is the usual bar for a rank order to act on.")]
    if rel.split_half is not None:
        out.append(Figure("Split-half reliability", f"{rel.split_half:.3f}",
                          "How alike two independent halves of the judgements rank the essays (Spearman–Brown "
                          "corrected to the whole): a check on SSR that does not trust the model."))
    if rel.target is not None:
        out.append(Figure("Target reliability", f"{rel.target:g}" + (" (not reached)" if rel.target_unreached else ""),
                          f"The stop rule ended the batch first: {rel.target_unreached}." if rel.target_unreached else
                          "The stop rule's target: comparisons stop once SSR reaches it."))
    verdicts = pos.a_wins + pos.b_wins
    if verdicts:
        out.append(Figure("Position bias", f"{pos.bias_logit:+.2f} ± {Z95 * pos.bias_se:.2f} logits",
                          f"The essay shown first won {pos.a_wins / verdicts:.0%} of {verdicts} verdicts; pairs are "
                          "shown in both orders, so a bias moves no score (0 is none)."))
    per_essay = [r.comparisons for r in rows]
    if per_essay:
        out.append(Figure("Comparisons per essay", f"{sum(per_essay) / len(per_essay):.1f} (min {min(per_essay)}, "
                          f"max {max(per_essay)})", "Verdicts each essay took part in; the SE shrinks as they grow."))
    misfits = [r.essay_id for r in rows if r.misfit]
    out.append(Figure("Misfit essays", str(len(misfits)),
                      "Judged inconsistently (infit above the batch's mean + 2 SD): read these before trusting "
                      "their rank." if misfits else "No essay was judged inconsistently."))
    out.append(Figure("Cost", f"${cost.usd:.4f}", f"{cost.input_tokens:,} input and {cost.output_tokens:,} output "
                      f"tokens ({cost.cache_read_tokens:,} read from the prompt cache)."))
    return out


def grade_counts(rows: list[EssayRow]) -> dict[str, int]:
    counts = Counter(r.grade for r in rows if r.grade is not None)
    return {g: counts[g] for g in GRADE_SCALE if g in counts}


def ranking_spec(rows: list[EssayRow], bands: list[Band]) -> dict[str, Any]:
    """Each essay's score with its 95% interval, anchors labelled with their known grade, misfits in red,
    the grade bands behind."""
    labelled = len(rows) <= LABELLED_ESSAYS
    y: dict[str, Any] = (
        {"field": "essay", "type": "nominal", "sort": {"field": "rank", "order": "ascending"}, "title": None,
         "axis": {"labelLimit": 160}} if labelled else
        {"field": "rank", "type": "quantitative", "scale": {"reverse": True}, "title": "rank"})
    finite = [x for r in rows for x in (r.low, r.high)]
    lo, hi = (min(finite), max(finite)) if finite else (-1.0, 1.0)
    values = [{"essay": r.essay_id, "rank": r.rank, "score": round(r.score, 4), "low": round(r.low, 4),
               "high": round(r.high, 4), "kind": r.kind, "label": r.known_grade if r.is_anchor else ""}
              for r in rows]
    band_values = [{"grade": b.grade, "low": max(b.low, lo), "high": min(b.high, hi)} for b in bands
                   if math.isfinite(max(b.low, lo)) and max(b.low, lo) < min(b.high, hi)]
    x = {"field": "score", "type": "quantitative", "title": "score (logits), 95% interval",
         "scale": {"domain": [math.floor(lo), math.ceil(hi)]}, "axis": {"tickCount": 10}}
    layers: list[dict[str, Any]] = []
    if band_values:
        layers += [
            {"data": {"values": band_values}, "mark": {"type": "rect", "opacity": 0.12},
             "encoding": {"x": {"field": "low", "type": "quantitative"}, "x2": {"field": "high"},
                          "color": {"field": "grade", "type": "nominal", "legend": None,
                                    "scale": {"scheme": "category10"}}}},
            {"data": {"values": band_values}, "mark": {"type": "text", "baseline": "top", "dy": 2, "fontSize": 12,
                                                       "fontWeight": "bold", "color": "#555"},
             "transform": [{"calculate": "(datum.low + datum.high) / 2", "as": "middle"}],
             "encoding": {"x": {"field": "middle", "type": "quantitative"}, "y": {"value": 0},
                          "text": {"field": "grade"}}},
        ]
    colour = {"field": "kind", "type": "nominal", "title": None,
              "scale": {"domain": list(KIND_COLOURS), "range": list(KIND_COLOURS.values())}}
    layers += [
        {"mark": {"type": "rule"}, "encoding": {"y": y, "x": {**x, "field": "low"}, "x2": {"field": "high"},
                                                "color": {**colour, "legend": None}}},
        {"mark": {"type": "point", "filled": True, "size": 40},
         "encoding": {"y": y, "x": x, "color": colour, "tooltip": [
             {"field": "essay"}, {"field": "rank"}, {"field": "score"}, {"field": "low"}, {"field": "high"}]}},
        {"mark": {"type": "text", "align": "left", "dx": 6, "fontSize": 11, "fontWeight": "bold"},
         "encoding": {"y": y, "x": {**x, "field": "high"}, "text": {"field": "label"}}},
    ]
    spec: dict[str, Any] = {
        "$schema": VEGA_LITE, "data": {"values": values}, "width": 760,
        "height": {"step": 14} if labelled else 600, "layer": layers,
        "resolve": {"scale": {"color": "independent"}},  # the bands' colours are not the essays'
        "config": {"font": "sans-serif", "view": {"stroke": None}},
    }
    return spec


def grade_spec(counts: dict[str, int]) -> dict[str, Any]:
    """Students per projected grade, in the scale's order."""
    return {
        "$schema": VEGA_LITE, "width": 360, "height": 180,
        "data": {"values": [{"grade": g, "students": n} for g, n in counts.items()]},
        "mark": {"type": "bar", "color": "#1f77b4"},
        "encoding": {"x": {"field": "grade", "type": "ordinal", "sort": list(counts), "title": "projected grade",
                           "axis": {"labelAngle": 0}},
                     "y": {"field": "students", "type": "quantitative", "title": "students",
                           "axis": {"tickMinStep": 1}}},
        "config": {"font": "sans-serif", "view": {"stroke": None}},
    }


def comparisons_spec(rows: list[EssayRow]) -> dict[str, Any]:
    """How many essays took part in how many verdicts."""
    counts = Counter(r.comparisons for r in rows)
    return {
        "$schema": VEGA_LITE, "width": 360, "height": 180,
        "data": {"values": [{"comparisons": c, "essays": n} for c, n in sorted(counts.items())]},
        "mark": {"type": "bar", "color": "#7f7f7f"},
        "encoding": {"x": {"field": "comparisons", "type": "ordinal", "title": "verdicts per essay",
                           "axis": {"labelAngle": 0}},
                     "y": {"field": "essays", "type": "quantitative", "title": "essays",
                           "axis": {"tickMinStep": 1}}},
        "config": {"font": "sans-serif", "view": {"stroke": None}},
    }


def build(result: BatchResult, attempts: list[dict[str, Any]], status: dict[str, Any] | None = None) -> Report:
    """The report of a batch; `status` (its cj_batch_health row) adds its progress while it runs."""
    rows = essay_rows(result, attempts)
    bands = grade_bands(rows)
    counts = grade_counts(rows)
    terminal = result.state in TERMINAL_STATES
    progress = None
    if status is not None and not terminal:
        progress = progress_of(status, int(status.get("essays") or len(rows)))
    report = Report(batch_id=result.batch_id, state=result.state.value, terminal=terminal,
                    completion_reason=result.completion_reason, essays=rows, bands=bands,
                    figures=figures(result, rows) if rows else [], grade_counts=counts,
                    judges=[j.model_dump() for j in result.judges],
                    progress=progress)
    if rows:
        report.charts["ranking"] = ranking_spec(rows, bands)
        report.charts["comparisons"] = comparisons_spec(rows)
    if counts:
        report.charts["grades"] = grade_spec(counts)
    return report
