"""Results recorded once (invariant 5), the Supervisor's expiry, cancellation, and the database's guards."""

from __future__ import annotations

import asyncio

import pytest
import ray
from sqlalchemy.exc import DBAPIError

from actors import names
from cjcore.contracts import BatchState, ComparisonResult, Winner
from driver.api import CJClient
from tests.helpers import essays, host_of, in_flight, repo_call, run_batch, sql, submit, wait_for, wait_until


def test_a_result_is_recorded_once_whatever_arrives_after_it(stack, sim):
    sim.configure(timeout_rate=1.0, hang_s=8.0)  # calls hang: pairs stay in flight until we answer them
    batch_id = submit(stack, {"essays": essays(3, "dup"), "max_comparisons": 3})
    wait_until(lambda: len(in_flight(stack, batch_id)) == 3, what="3 pairs in flight")
    cids = [r[0] for r in in_flight(stack, batch_id)]
    host = host_of(stack, batch_id)
    verdicts = [ComparisonResult(cid, batch_id, Winner.ESSAY_A) for cid in cids]
    assert ray.get(host.record_results.remote(batch_id, verdicts[:2])) == 2
    assert ray.get(host.record_results.remote(batch_id, verdicts[:2])) == 0  # duplicate: no-op
    flipped = [ComparisonResult(cid, batch_id, Winner.ESSAY_B) for cid in cids[:2]]
    assert ray.get(host.record_results.remote(batch_id, flipped)) == 0  # a different late answer: still no-op
    assert ray.get(host.expire.remote(batch_id, cids, 0.0)) == 1  # expiry only takes the one without a result
    sim.configure(timeout_rate=0.0)
    result = wait_for(stack, batch_id)
    assert result.state is BatchState.COMPLETED
    rows = sql(stack, "SELECT correlation_id, winner, error_code FROM cj_comparison_pairs WHERE batch_id = :b",
               b=batch_id)
    by_cid = {r[0]: (r[1], r[2]) for r in rows}
    assert [by_cid[c] for c in cids[:2]] == [("essay_a", None)] * 2
    assert by_cid[cids[2]] == ("error", "QUEUE_TIMEOUT")
    assert (result.counters.completed, result.counters.failed) == (2, 1)
    # The hung provider calls time out at the workers later; their results must stay no-ops.
    assert repo_call(stack, "check_invariants", batch_id) == []


def test_the_supervisor_never_expires_work_a_worker_holds_however_old(stack, sim):
    sim.configure(timeout_rate=1.0, hang_s=8.0)  # the calls hang at the provider, held by their worker
    batch_id = submit(stack, {"essays": essays(3, "stuck"), "max_comparisons": 6})
    wait_until(lambda: sim.stats["timeouts"] == 3, what="3 calls hanging at the provider")
    supervisor = ray.get_actor(names.SUPERVISOR, namespace=stack.ray_namespace)
    done = ray.get(supervisor.run_once.remote(max_processing_seconds=0.0))  # every row is "too old"
    assert done.get("expired", 0) == 0
    sim.configure(timeout_rate=0.0)
    result = wait_for(stack, batch_id)  # the calls time out at the client (5 s) and are retried
    assert result.state is BatchState.COMPLETED
    codes = sql(stack, "SELECT error_code, count(*) FROM cj_comparison_pairs WHERE batch_id = :b "
                "AND winner = 'error' GROUP BY 1", b=batch_id)
    assert codes == [("TIMEOUT", 3)]  # recorded against the attempts that made them; nothing expired
    assert repo_call(stack, "check_invariants", batch_id) == []


def test_cancel_mid_round_ends_cancelled_with_one_event(stack, sim):
    sim.configure(latency_ms=300.0)
    batch_id = submit(stack, {"essays": essays(12, "cxl"), "max_comparisons": 60})
    wait_until(lambda: len(in_flight(stack, batch_id)) > 0, what="a round in flight")

    async def cancel():
        async with CJClient(stack) as client:
            return await client.cancel(batch_id)

    asyncio.run(cancel())
    result = wait_for(stack, batch_id)
    assert result.state is BatchState.CANCELLED
    assert result.counters.submitted < 60
    assert result.counters.completed + result.counters.failed == result.counters.submitted
    assert [e["event_type"] for e in repo_call(stack, "events", batch_id)] == ["cj.batch.cancelled"]
    assert repo_call(stack, "check_invariants", batch_id) == []


def test_a_provider_overloaded_on_every_call_fails_the_batch_only_after_the_outage_time(deployment, sim):
    settings = deployment(services=False, provider_outage_s=3.0)
    sim.configure(overload_rate=1.0)
    result = run_batch(settings, {"essays": essays(8, "fail"), "max_comparisons": 200})
    assert result.state is BatchState.FAILED
    assert result.completion_reason == "provider_outage" and "CJ_PROVIDER_OUTAGE_S" in (result.error or "")
    assert result.counters.completed == 0 and result.counters.failed == result.counters.submitted
    assert result.counters.submitted < 200  # retried with backoff, not the budget burnt
    assert [e["event_type"] for e in repo_call(settings, "events", result.batch_id)] == ["cj.batch.failed"]
    assert repo_call(settings, "check_invariants", result.batch_id) == []


def test_a_provider_failing_most_calls_never_fails_the_batch(stack, sim):
    sim.configure(error_rate=0.8)  # 500s: the provider's, not the judge's
    result = run_batch(stack, {"essays": essays(3, "pf"), "max_comparisons": 100})
    print(f"\n80% provider failures: {result.counters}")
    assert result.state is BatchState.COMPLETED
    assert result.counters.completed == 3  # every pair judged in the end, however many attempts it took
    assert repo_call(stack, "check_invariants", result.batch_id) == []


def test_a_judge_failing_every_call_ends_failed_with_one_failure_event(stack, sim):
    sim.configure(malformed_rate=1.0)  # answered, never with a verdict: the judge's failure
    result = run_batch(stack, {"essays": essays(8, "fail"), "max_comparisons": 28})
    assert result.state is BatchState.FAILED
    assert result.completion_reason == "low_success_rate"
    assert result.counters.completed == 0 and result.counters.failed == result.counters.submitted
    assert [e["event_type"] for e in repo_call(stack, "events", result.batch_id)] == ["cj.batch.failed"]
    assert repo_call(stack, "check_invariants", result.batch_id) == []


def test_the_database_refuses_a_changed_budget_or_a_change_out_of_a_terminal_state(stack, sim):
    result = run_batch(stack, {"essays": essays(3, "guard"), "max_comparisons": 3})
    with pytest.raises(DBAPIError, match="total_budget"):
        sql(stack, "UPDATE cj_batch_states SET total_budget = 99 WHERE batch_id = :b", b=result.batch_id)
    with pytest.raises(DBAPIError, match="cannot change state"):
        sql(stack, "UPDATE cj_batch_states SET state = 'SCORING' WHERE batch_id = :b", b=result.batch_id)
    with pytest.raises(DBAPIError, match="ck_cj_submitted_le_budget"):
        sql(stack, "UPDATE cj_batch_states SET submitted_comparisons = 4 WHERE batch_id = :b", b=result.batch_id)
    # A second finalization writes nothing: still one event.
    assert repo_call(stack, "finalize", result.batch_id, BatchState.COMPLETED, "again") is None
    assert len(repo_call(stack, "events", result.batch_id)) == 1


def test_a_judge_failing_90_percent_of_calls_ends_failed_with_one_failure_event_and_a_reason(stack, sim):
    sim.configure(malformed_rate=0.9)
    result = run_batch(stack, {"essays": essays(10, "f90"), "max_comparisons": 100})
    print(f"\n90% errors: {result.counters}, {result.error}")
    assert result.state is BatchState.FAILED and result.completion_reason == "low_success_rate"
    assert result.error and "valid results" in result.error
    c = result.counters
    assert c.completed + c.failed >= stack.min_attempts_for_failure
    assert c.completed < stack.min_success_rate * (c.completed + c.failed)
    assert c.submitted < 100  # it stopped instead of spending the budget on a broken judge
    assert sql(stack, "SELECT count(*) FROM cj_comparison_pairs WHERE batch_id = :b AND attempt > 1",
               b=result.batch_id)[0][0] > 0
    assert [e["event_type"] for e in repo_call(stack, "events", result.batch_id)] == ["cj.batch.failed"]
    assert repo_call(stack, "check_invariants", result.batch_id) == []


def test_continuation_rounds_rebuild_the_original_request_after_a_coordinator_restart(stack, sim):
    from cjcore.contracts import parse_batch_request

    sim.configure(latency_ms=20.0)
    data = {"essays": essays(8, "cont"), "max_comparisons": 28, "completion_threshold_pct": 100,
            "assignment_id": "as-7", "user_id": "u-3", "course_code": "ENG5", "instructions": "Judge the argument.",
            "llm": {"model": "claude-sonnet-4-5", "max_tokens": 300}}
    batch_id = submit(stack, data)
    wait_until(lambda: sql(stack, "SELECT count(*) FROM cj_comparison_pairs WHERE batch_id = :b AND iteration >= 2",
                            b=batch_id)[0][0] > 0, what="a continuation round")
    ray.kill(host_of(stack, batch_id), no_restart=False)  # Ray restarts it; it rebuilds its batches from the database
    result = wait_for(stack, batch_id)
    assert result.state is BatchState.COMPLETED and result.counters.iterations >= 2

    ((stored, source, budget, meta),) = sql(stack, """
        SELECT b.original_request, b.budget_source, s.total_budget, s.metadata
        FROM cj_batches b JOIN cj_batch_states s USING (batch_id) WHERE batch_id = :b""", b=batch_id)
    assert stored == parse_batch_request(data).model_dump_json()
    assert (source, budget) == ("runner_override", 28)
    assert {"budget_source", "n_essays", "completion", "reliability", "position"} <= set(meta)
    assert meta["budget_source"] == "runner_override"
    # Every call of every round, before and after the restart, used the request's LLM overrides.
    assert set(sim.request_shapes) == {("claude-sonnet-4-5", 300)}
    assert repo_call(stack, "check_invariants", batch_id) == []
