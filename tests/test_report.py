"""The report's figures and charts (cjcore/report.py) and its HTML (web/page.py), without Ray or a database."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cjcore import report
from cjcore.contracts import BatchResult
from web import page

SCORES = {"a1": (2.0, 0.3, "A"), "s1": (1.2, 0.4, None), "c1": (0.1, 0.3, "C"), "s2": (-0.2, 0.5, None),
          "f1": (-1.9, 0.3, "F"), "s3": (-2.4, 0.6, None)}


def _result(state: str = "COMPLETED", **extra: Any) -> BatchResult:
    ranked = sorted(SCORES.items(), key=lambda kv: -kv[1][0])
    return BatchResult.model_validate({
        "batch_id": "b-report", "state": state, "completion_reason": "stable" if state == "COMPLETED" else None,
        "counters": {"total_budget": 40, "submitted": 20, "completed": 18, "failed": 2, "iterations": 3},
        "rankings": [{"essay_id": e, "rank": i + 1, "score": s, "se": se, "is_anchor": g is not None,
                      "known_grade": g, "infit": 1.0, "misfit": e == "s2"} for i, (e, (s, se, g)) in enumerate(ranked)],
        "grade_projections": [{"essay_id": "s1", "grade": "B", "probabilities": {"B": 0.6, "A": 0.4},
                               "confidence": 0.6},
                              {"essay_id": "s2", "grade": "C", "probabilities": {"C": 0.7}, "confidence": 0.7},
                              {"essay_id": "s3", "grade": "F", "probabilities": {"F": 0.9}, "confidence": 0.9}],
        "reliability": {"ssr": 0.81, "split_half": 0.77, "target": 0.9, "target_unreached": "budget spent"},
        "position": {"a_wins": 10, "b_wins": 8, "bias_logit": 0.2, "bias_se": 0.4},
        "cost": {"input_tokens": 1000, "output_tokens": 50, "usd": 0.01}, **extra})


ATTEMPTS: list[dict[str, Any]] = [{"essay_a_id": "a1", "essay_b_id": "s1", "winner": "essay_a"},
            {"essay_a_id": "s1", "essay_b_id": "s2", "winner": "essay_b"},
            {"essay_a_id": "s2", "essay_b_id": "s3", "winner": "error"},  # an error is no verdict
            {"essay_a_id": "c1", "essay_b_id": "s3", "winner": None}]  # nor is a call in flight


def test_each_essay_has_its_95_interval_projection_and_verdicts() -> None:
    rows = report.essay_rows(_result(), ATTEMPTS)
    assert [r.essay_id for r in rows] == ["a1", "s1", "c1", "s2", "f1", "s3"]
    s1 = rows[1]
    assert s1.low == pytest.approx(1.2 - 1.959964 * 0.4) and s1.high == pytest.approx(1.2 + 1.959964 * 0.4)
    assert (s1.grade, s1.probability, s1.comparisons) == ("B", 0.6, 2)
    assert {r.essay_id: r.comparisons for r in rows} == {"a1": 1, "s1": 2, "c1": 0, "s2": 1, "f1": 0, "s3": 0}
    assert [r.kind for r in rows] == ["anchor", "student", "anchor", "misfit", "anchor", "student"]


def test_grade_bands_follow_the_anchors_and_meet() -> None:
    bands = report.grade_bands(report.essay_rows(_result(), []))
    assert [b.grade for b in bands] == ["F", "C", "A"]
    assert bands[0].high == pytest.approx((-1.9 + 0.1) / 2) and bands[1].high == pytest.approx((0.1 + 2.0) / 2)
    assert all(a.high == b.low for a, b in zip(bands, bands[1:], strict=False))


def test_no_anchors_no_bands_and_no_grade_chart() -> None:
    result = _result()
    result.rankings = [r.model_copy(update={"is_anchor": False, "known_grade": None}) for r in result.rankings]
    result.grade_projections = []
    built = report.build(result, [])
    assert built.bands == [] and "grades" not in built.charts and "ranking" in built.charts


def test_the_figures_say_what_they_mean() -> None:
    figures = {f.name: f for f in report.figures(_result(), report.essay_rows(_result(), ATTEMPTS))}
    assert figures["Reliability (SSR)"].value == "0.810" and "81%" in figures["Reliability (SSR)"].meaning
    assert figures["Target reliability"].value == "0.9 (not reached)"
    assert "budget spent" in figures["Target reliability"].meaning
    assert "56% of 18 verdicts" in figures["Position bias"].meaning
    assert figures["Misfit essays"].value == "1"
    assert figures["Comparisons per essay"].value.startswith("0.7 (min 0, max 2)")


def test_progress_counts_against_the_smaller_of_budget_and_pairs() -> None:
    status = {"total_budget": 100, "submitted_comparisons": 14, "completed_comparisons": 9, "failed_comparisons": 1,
              "in_flight": 4, "current_iteration": 2, "completion_threshold_pct": 95.0, "essays": 6}
    p = report.progress_of(status, 6)
    assert (p.denominator, p.completion_pct, p.threshold_pct, p.rounds) == (15, 60.0, 95.0, 2)
    assert report.build(_result("WAITING_CALLBACKS"), [], status).progress == p
    assert report.build(_result(), [], status).progress is None  # an ended batch shows no progress


def test_the_ranking_chart_has_every_essay_and_plots_by_rank_when_long() -> None:
    rows = report.essay_rows(_result(), [])
    spec = report.ranking_spec(rows, report.grade_bands(rows))
    assert sorted(v["essay"] for v in spec["data"]["values"]) == sorted(SCORES)
    assert spec["layer"][-2]["encoding"]["y"]["field"] == "essay"
    many = [r for _ in range(60) for r in rows][: report.LABELLED_ESSAYS + 1]
    assert report.ranking_spec(many, [])["layer"][-2]["encoding"]["y"]["field"] == "rank"


def test_the_page_is_self_contained_and_escapes_every_name() -> None:
    result = _result()
    result.rankings[1] = result.rankings[1].model_copy(update={"essay_id": "<script>alert(1)</script>"})
    html = page.report_page(report.build(result, ATTEMPTS), live=False)
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not re.search(r"<script|(src|href)=\"(https?:)?//", html)  # no script, nothing fetched
    assert html.count("<svg") == 3 and "http-equiv=\"refresh\"" not in html
    for essay_id in ("a1", "c1", "s2", "f1", "s3"):
        assert f'<td class="essay-id">{essay_id}</td>' in html


def test_a_running_batch_page_reloads_itself_only_when_served() -> None:
    status = {"total_budget": 40, "submitted_comparisons": 8, "completed_comparisons": 5, "failed_comparisons": 0,
              "in_flight": 3, "current_iteration": 1, "completion_threshold_pct": 95.0, "essays": 6}
    running = report.build(_result("WAITING_CALLBACKS"), [], status)
    assert f'<meta http-equiv="refresh" content="{page.REFRESH_S}">' in page.report_page(running, live=True)
    assert "http-equiv" not in page.report_page(running, live=False)
    assert 'id="progress"' in page.report_page(running, live=False)
