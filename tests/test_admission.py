"""Admission (issue 14): any number of batches accepted QUEUED at once, at most CJ_MAX_LIVE_BATCHES live, small
batches not starved behind large ones, queued batches shown with their place and cancellable."""

from __future__ import annotations

import asyncio

import pytest

from cjcore import admission
from cjcore.admission import Queued
from driver.api import CJClient
from tests.helpers import essays, sql, wait_for


def test_a_small_batch_goes_before_larger_ones_queued_a_little_earlier():
    big = [Queued(f"big{i}", 60, 24, waited_s=10.0 + i) for i in range(5)]
    small = Queued("small", 350, 4, waited_s=0.0)  # 6 comparisons at most
    assert [q.batch_id for q in admission.order([*big, small])][0] == "small"
    # Among equals, the longest waiting first.
    assert [q.batch_id for q in admission.order(big)] == ["big4", "big3", "big2", "big1", "big0"]


def test_a_large_batch_waiting_long_enough_goes_before_new_small_ones():
    old_large = Queued("large", 5_000, 150, waited_s=3_000.0)  # 5,000 comparisons, waited 50 minutes
    new_small = Queued("small", 60, 24, waited_s=0.0)
    assert admission.order([new_small, old_large], aging_per_s=2.0)[0].batch_id == "large"
    assert admission.order([new_small, old_large], aging_per_s=0.0)[0].batch_id == "small"


@pytest.mark.parametrize(("live", "starting", "max_live", "start", "expected"), [
    (0, 0, 10, 4, 4), (8, 0, 10, 4, 2), (10, 0, 10, 4, 0), (3, 4, 10, 4, 0), (3, 1, 10, 4, 3), (12, 0, 10, 4, 0),
])
def test_admission_stays_within_the_live_and_the_start_bounds(live, starting, max_live, start, expected):
    assert admission.to_admit(live, starting, max_live, start) == expected


def test_the_default_bound_on_batches_in_progress_follows_memory_not_cores():
    gib = 2**30
    assert admission.default_max_live(16 * gib) == 2048  # a quarter of 16 GiB at 2 MiB a batch
    assert admission.default_max_live(0.001 * gib) == 1


def test_admission_by_work_keeps_the_backlog_near_its_target_and_always_admits_under_it():
    queue = [Queued(f"q{i}", 100, 36, waited_s=0.0) for i in range(10)]  # 36 comparisons a first round
    picked = admission.admit_by_work(queue, room=10, backlog=0, backlog_target=100, pairs_per_essay=1.0)
    assert [q.batch_id for q in picked] == ["q0", "q1", "q2"]  # 0, 36, 72 < 100; then 108 ≥ 100
    assert admission.admit_by_work(queue, room=10, backlog=100, backlog_target=100, pairs_per_essay=1.0) == []
    assert len(admission.admit_by_work(queue, room=4, backlog=0, backlog_target=None, pairs_per_essay=1.0)) == 4
    big = [Queued("big", 10_000, 2_000, waited_s=0.0)]  # larger than the target alone: still admitted
    assert admission.admit_by_work(big, room=1, backlog=0, backlog_target=100, pairs_per_essay=1.0) == big


def _overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment."""
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def _request(prefix: str, n: int, budget: int) -> dict:
    return {"batch_id": f"{prefix}-{n}-{budget}", "max_comparisons": budget, "pair_generation_seed": 3,
            "essays": essays(n, prefix=prefix)}


def test_six_batches_submitted_at_once_are_never_more_than_two_live(deployment, sim):
    settings = deployment(services=False, max_live_batches=2)
    requests = [_request(f"lv{i}", 6, 15) for i in range(6)]

    async def go() -> list:
        async with CJClient(settings) as client:
            ids = await client.submit_many(requests)  # one transaction: all six QUEUED at once
            return [await client.wait(b, timeout_s=180, poll_s=0.05) for b in ids]

    results = asyncio.run(go())
    assert [r.state.value for r in results] == ["COMPLETED"] * 6
    rows = sql(settings, "SELECT extract(epoch FROM admitted_at), extract(epoch FROM finished_at), created_at "
               "FROM cj_batches WHERE batch_id LIKE 'lv%'")
    assert len({r[2] for r in rows}) == 1  # stored in one transaction
    assert _overlap([(float(a), float(b)) for a, b, _ in rows]) <= 2


def test_queued_batches_show_their_place_and_a_queued_batch_cancels_without_a_call(deployment, sim):
    settings = deployment(services=False, max_live_batches=1)
    first, second, last = _request("qa", 8, 28), _request("qb", 8, 28), _request("qc", 8, 28)

    async def go():
        async with CJClient(settings) as client:
            ids = await client.submit_many([first, second, last])
            rows = {r["batch_id"]: r for r in await client.health() if r["batch_id"] in ids}
            cancelled = await client.cancel(last["batch_id"])
            return ids, rows, cancelled

    ids, rows, cancelled = asyncio.run(go())
    queued = sorted(r["queue_position"] for r in rows.values() if r["state"] == "QUEUED")
    assert queued == list(range(1, len(queued) + 1)) and rows[last["batch_id"]]["queue_position"] is not None
    assert cancelled.value == "CANCELLED"
    for b in ids[:2]:
        assert wait_for(settings, b).state.value == "COMPLETED"
    result = wait_for(settings, last["batch_id"])
    assert result.state.value == "CANCELLED" and result.counters.submitted == 0
    assert sql(settings, "SELECT count(*) FROM cj_event_outbox WHERE aggregate_id = :b", b=last["batch_id"]) == [(1,)]
