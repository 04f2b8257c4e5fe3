"""The Message Batches path (CJ_PROVIDER_MODE=batches): many comparisons per provider call through the
real SDK's `messages.batches`, against the simulated server's batch endpoints."""

from __future__ import annotations

import asyncio

import pytest

from actors import provider_call
from cjcore.contracts import ComparisonRequest, ErrorType
from cjcore.settings import DEFAULT_PRICES
from tests.conftest import TEST_API_KEY
from tests.helpers import essays, repo_call, run_batches, sql

PRICE = DEFAULT_PRICES["claude-haiku-4-5"]


def _requests(n: int) -> list[ComparisonRequest]:
    return [ComparisonRequest(correlation_id=f"cid-{i}", batch_id="b", essay_a_id=f"a{i}", essay_b_id=f"b{i}",
                              text_a=f"first essay {i}", text_b=f"second essay {i}", instructions="Judge.",
                              model="claude-haiku-4-5", temperature=0.0, max_tokens=256) for i in range(n)]


def _compare_batch(sim, reqs, **kw):
    client = provider_call.make_client(TEST_API_KEY, f"http://127.0.0.1:{sim.port}", 10)
    return asyncio.run(provider_call.compare_batch(client, reqs, PRICE, poll_s=0.01, poll_max_s=0.05,
                                                   give_up_s=kw.get("give_up_s", 10)))


def test_one_message_batch_answers_every_request_in_order_at_half_price(sim):
    sim.configure(latency_ms=50)  # the batch is "in_progress" at first: the client polls until "ended"
    reqs = _requests(40)
    outcomes = _compare_batch(sim, reqs)
    assert [o.result.correlation_id for o in outcomes] == [r.correlation_id for r in reqs]
    assert all(o.result.error_type is None for o in outcomes)
    assert sim.stats["batches"] == 1 and sim.stats["requests"] == 40
    r = outcomes[0].result
    full = provider_call.cost_usd(PRICE, r.input_tokens, r.output_tokens, 0, 0)
    assert r.cost_usd == pytest.approx(provider_call.BATCH_DISCOUNT * full)


def test_errored_and_expired_items_become_typed_error_results(sim):
    sim.configure(error_rate=0.25, overload_rate=0.25, timeout_rate=0.25)
    outcomes = _compare_batch(sim, _requests(200))
    kinds = {o.result.error_type for o in outcomes}
    assert {ErrorType.SERVER_ERROR, ErrorType.OVERLOADED, ErrorType.TIMEOUT, None} <= kinds
    assert sum(o.result.error_type is ErrorType.SERVER_ERROR for o in outcomes) == sim.stats["server_errors"]
    assert sum(o.result.error_type is ErrorType.TIMEOUT for o in outcomes) == sim.stats["timeouts"]


def test_a_batch_that_does_not_end_in_time_is_a_timeout_for_each_request(sim):
    sim.configure(latency_ms=60_000)
    outcomes = _compare_batch(sim, _requests(3), give_up_s=0.2)
    assert [o.result.error_type for o in outcomes] == [ErrorType.TIMEOUT] * 3


def test_batches_mode_end_to_end_with_retries_and_invariants(deployment, sim):
    settings = deployment(services=False, provider_mode="batches", batch_window_s=0.05)
    sim.configure(error_rate=0.1)
    requests = [{"essays": essays(8, f"mb{i}-"), "max_comparisons": 28} for i in range(3)]
    results = run_batches(settings, requests)
    assert [r.state.value for r in results] == ["COMPLETED"] * 3
    for r in results:
        assert repo_call(settings, "check_invariants", r.batch_id) == []
    ((rows, errors),) = sql(settings, "SELECT count(*), count(*) FILTER (WHERE winner = 'error') "
                                      "FROM cj_comparison_pairs WHERE batch_id = ANY(:b)",
                            b=[r.batch_id for r in results])
    assert rows == sim.stats["requests"] and errors == sim.stats["server_errors"] > 0
    # Many comparisons per provider call: far fewer Message Batches than comparisons.
    assert sim.stats["batches"] * 4 <= rows
