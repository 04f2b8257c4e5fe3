"""Rulers (DESIGN §4.6): anchor sets calibrated once; batches graded against them are on one scale."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import random

import pytest

from cjcore import bradley_terry, pairing
from cjcore.contracts import Comparison, Winner, parse_batch_request
from cjcore.errors import InvalidRequest
from cjcore.rulers import Ruler, RulerAnchor, held_scores, link, parse_anchor_set
from cjcore.sample import eng5_request, eng5_truth
from driver import export
from driver.api import CJClient
from tests.helpers import essays, repo_call, run_batches, sql

RULER = Ruler("eng5-r1", ("F", "C", "A"), (-1.0, 1.0),
              {"aF": RulerAnchor("aF", "text F", "F", -2.0, 0.3), "aC": RulerAnchor("aC", "text C", "C", 0.0, 0.3),
               "aA": RulerAnchor("aA", "text A", "A", 2.0, 0.3)}, "judge", {})


def _request(**kw):
    return parse_batch_request({"essays": [{"essay_id": "s1", "text": "one"}, {"essay_id": "s2", "text": "two"}],
                                **kw})


def test_a_batch_naming_a_set_gets_every_anchor_of_it_and_cited_anchors_are_filled_in():
    linked = link(_request(anchor_set_id="eng5-r1"), RULER)
    assert [e.essay_id for e in linked] == ["s1", "s2", "aF", "aC", "aA"]
    assert all(e.is_anchor and e.text == RULER.anchors[e.essay_id].text for e in linked[2:])
    cited = parse_batch_request({"essays": [{"essay_id": "s1", "text": "one"},
                                            {"essay_id": "mine-C", "anchor_ref_id": "aC"}]})
    linked = link(cited, RULER)
    assert linked[1].text == "text C" and linked[1].known_grade == "C" and linked[1].is_anchor


def test_bad_citations_are_refused_naming_the_field():
    cited = parse_batch_request({"essays": [{"essay_id": "s1", "text": "one"},
                                            {"essay_id": "x", "anchor_ref_id": "nope"}]})
    with pytest.raises(InvalidRequest) as err:
        link(cited, RULER)
    assert err.value.field == "essays[1].anchor_ref_id"
    with pytest.raises(InvalidRequest) as err:
        parse_batch_request({"essays": [{"essay_id": "s1", "text": "one"}, {"essay_id": "x"}]})
    assert err.value.field == "essays[1].text"
    with pytest.raises(InvalidRequest) as err:
        parse_anchor_set({"anchor_set_id": "s", "anchors": [{"anchor_ref_id": "a", "text": "t", "known_grade": "Q"}]})
    assert err.value.field == "anchors[0].known_grade"


def test_only_the_registered_text_is_held_at_the_calibrated_score():
    held = held_scores([("aC", "aC", "text C"), ("other", "aA", "a different text")], RULER)
    assert held == {"aC": (0.0, 0.3)}


def test_held_anchors_keep_their_scores_are_never_paired_together_and_students_land_on_their_scale():
    rng = random.Random(3)
    truth = {"aF": -2.0, "aC": 0.0, "aA": 2.0, **{f"s{i}": rng.uniform(-2, 2) for i in range(12)}}
    held = frozenset({"aF", "aC", "aA"})
    ids = sorted(truth)
    planned = pairing.first_round(ids, 200, rng, held)
    assert len(planned) == 105 - 3  # every pair but the three among the anchors
    assert not any(p.essay_a_id in held and p.essay_b_id in held for p in planned)
    comps = []
    for p in planned * 4:
        logit = truth[p.essay_a_id] - truth[p.essay_b_id]
        a_won = rng.random() < 1 / (1 + math.exp(-logit))
        comps.append(Comparison(p.essay_a_id, p.essay_b_id, Winner.ESSAY_A if a_won else Winner.ESSAY_B))
    fixed = {k: (v, 0.3) for k, v in truth.items() if k in held}
    fit = bradley_terry.fit(ids, comps, fixed=fixed)
    s = fit.score_of()
    assert all(s[k] == v for k, v in truth.items() if k in held) and fit.se_of()["aC"] == 0.3
    students = [k for k in ids if k not in held]
    error = sum(abs(s[k] - truth[k]) for k in students) / len(students)
    assert error < 0.5  # on the ruler's scale, not re-centred
    assert 0 < fit.ssr <= 1


def _anchor_set(set_id: str) -> dict:
    anchors = [e for e in eng5_request()["essays"] if e.get("is_anchor")]
    return {"anchor_set_id": set_id, "assignment_id": "eng5-2026", "course_code": "ENG5",
            "anchors": [{"anchor_ref_id": a["essay_id"], "text": a["text"], "known_grade": a["known_grade"]}
                        for a in anchors]}


def test_two_batches_on_one_ruler_place_the_same_essays_alike_and_a_used_ruler_is_immutable(stack, sim):
    # A judge that always agrees with the truth (qualities ×10, no noise): each student then lands between the
    # same two anchors in both batches, so what is tested is the one scale, not sampling luck; the rates under
    # a noisy judge are measured in `bench pairing` (ruler section).
    sim.configure(truth={k: 10 * q for k, q in eng5_truth().items()}, noise=0.0)

    async def register(data):
        async with CJClient(stack) as client:
            return await client.register_anchor_set(data, timeout_s=180)

    shown = asyncio.run(register(_anchor_set("eng5-ruler")))
    assert shown["used_by_batches"] == 0 and len(shown["anchors"]) == 12
    assert shown["grades"] == ["F", "E", "D", "C", "B", "A"] and len(shown["boundaries"]) == 5
    calibrated = {a["anchor_ref_id"]: a["score"] for a in shown["anchors"]}

    students = [e for e in eng5_request()["essays"] if not e.get("is_anchor")]
    # 12 students a batch, 6 of the sample's in both: the other sample students plus essays of their own
    first = students[:9] + essays(3, "r1-")
    second = students[3:] + essays(3, "r2-")
    base = {"assignment_id": "eng5-2026", "anchor_set_id": "eng5-ruler", "max_comparisons": 400,
            "completion_threshold_pct": 100, "target_reliability": 0.95}
    results = run_batches(stack, [{**base, "essays": first}, {**base, "essays": second}])
    by = [{r.essay_id: r for r in res.rankings} for res in results]
    grades = [{p.essay_id: p.grade for p in res.grade_projections} for res in results]
    order = "FEDCBA"
    for res, ranks in zip(results, by, strict=True):
        assert res.state.value == "COMPLETED" and res.anchor_set_id == "eng5-ruler"
        assert repo_call(stack, "check_invariants", res.batch_id) == []
        for ref, score in calibrated.items():  # held at the calibration, marked as the ruler's
            assert ranks[ref].held and ranks[ref].score == pytest.approx(score, abs=1e-4)
        # no anchor was compared with another anchor
        rows = repo_call(stack, "attempts", res.batch_id)
        assert not any(r["essay_a_id"] in calibrated and r["essay_b_id"] in calibrated for r in rows)
    shared = [e["essay_id"] for e in students[3:9]]
    for e in shared:
        one, two = by[0][e], by[1][e]
        assert abs(one.score - two.score) <= 2 * math.hypot(one.se, two.se), e  # within their SEs (95%)
        assert abs(order.index(grades[0][e]) - order.index(grades[1][e])) <= 1, e  # same grade or the next

    with pytest.raises(InvalidRequest) as err:  # used by two batches: re-registering it is refused
        asyncio.run(register(_anchor_set("eng5-ruler")))
    assert err.value.field == "anchor_set_id" and "used by 2 batches" in str(err.value)

    doc = export.document(results[0], repo_call(stack, "attempts", results[0].batch_id))
    rows = list(csv.DictReader(io.StringIO(export.as_csv(doc))))
    attempts = [r for r in rows if r["record"] == "attempt"]
    assert len(attempts) == results[0].counters.submitted
    assert {r["record"] for r in rows} == {"ranking", "projection", "attempt"}
    valid = [a for a in attempts if a["winner"] in ("essay_a", "essay_b")]
    assert len(valid) == results[0].counters.completed
    assert all(a["justification"] and a["winning_essay_id"] in (a["essay_a_id"], a["essay_b_id"]) for a in valid)
    assert json.loads(export.as_json(doc))["result"]["anchor_set_id"] == "eng5-ruler"


def test_an_unknown_anchor_set_is_refused_before_anything_is_stored(stack):
    async def go():
        async with CJClient(stack) as client:
            await client.submit({"anchor_set_id": "no-such-set", "essays": [
                {"essay_id": "x1", "text": "a"}, {"essay_id": "x2", "text": "b"}]})

    with pytest.raises(InvalidRequest) as err:
        asyncio.run(go())
    assert err.value.field == "anchor_set_id"


def test_an_anchor_with_text_and_an_unregistered_ref_but_no_grade_is_refused_naming_the_field(stack):
    """It used to pass validation and restart its coordinator for ever (no grade to project from)."""
    async def go():
        async with CJClient(stack) as client:
            await client.submit({"batch_id": "gradeless-1", "essays": [
                {"essay_id": "s1", "text": "a student"},
                {"essay_id": "a1", "text": "an anchor", "is_anchor": True, "anchor_ref_id": "never-registered"}]})

    with pytest.raises(InvalidRequest) as err:
        asyncio.run(go())
    assert err.value.field == "essays[1].known_grade"
    assert sql(stack, "SELECT count(*) FROM cj_batches WHERE batch_id = 'gradeless-1'")[0][0] == 0
