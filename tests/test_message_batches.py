"""The Message Batches path (CJ_PROVIDER_MODE=batches): many comparisons per provider call through the
real SDK's `messages.batches`, against the simulated server's batch endpoints."""

from __future__ import annotations

import asyncio

import pytest
import ray

from actors import names, provider_call
from cjcore.contracts import ComparisonRequest, ErrorType
from cjcore.settings import DEFAULT_PRICES
from driver.api import CJClient
from tests.conftest import TEST_API_KEY
from tests.helpers import essays, repo_call, run_batches, sql, submit, wait_for, wait_until

PRICE = DEFAULT_PRICES["claude-haiku-4-5"]


def _requests(n: int) -> list[ComparisonRequest]:
    return [ComparisonRequest(correlation_id=f"cid-{i}", batch_id="b", essay_a_id=f"a{i}", essay_b_id=f"b{i}",
                              text_a=f"first essay {i}", text_b=f"second essay {i}", instructions="Judge.",
                              model="claude-haiku-4-5", temperature=0.0, max_tokens=256) for i in range(n)]


def _compare_batch(sim, reqs, **kw):
    client = provider_call.make_client(TEST_API_KEY, f"http://127.0.0.1:{sim.port}", 10)
    return asyncio.run(provider_call.compare_batch(client, reqs, PRICE, poll_s=0.01, poll_max_s=0.05,
                                                   outage_s=kw.get("outage_s", 10), **kw.get("more", {})))


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


def test_a_message_batch_is_held_until_it_ends_and_failed_batch_api_calls_are_retried(sim):
    sim.configure(batch_delay_s=1.0, batch_api_overload_rate=0.5)  # half of create/retrieve/results: 529
    outcomes = _compare_batch(sim, _requests(5), outage_s=60)
    assert [o.result.error_type for o in outcomes] == [None] * 5
    assert sim.stats["batch_api_overloaded"] > 0 and sim.stats["batches_created"] == 1
    assert sim.stats["requests"] == 5  # retried calls of the API, never a second judging of the items


def test_batch_api_failures_lasting_the_outage_limit_become_transient_error_results(sim):
    sim.configure(batch_api_overload_rate=1.0)
    outcomes = _compare_batch(sim, _requests(3), outage_s=0.5)
    assert [o.result.error_type for o in outcomes] == [ErrorType.OVERLOADED] * 3


def test_a_message_batch_no_longer_wanted_is_cancelled_at_the_provider(sim):
    sim.configure(batch_delay_s=60.0)
    polls = []

    def cancelled() -> bool:
        polls.append(1)
        return len(polls) > 2  # the batch was cancelled while the Message Batch ran

    api = provider_call.BatchApi(provider_call.UNLIMITED.permit, provider_call.UNLIMITED.answered,
                                 provider_call.UNLIMITED.refused, cancelled)
    outcomes = _compare_batch(sim, _requests(4), more={"api": api})
    assert [o.result.error_type for o in outcomes] == [ErrorType.CANCELLED] * 4
    assert sim.stats["batches_cancelled"] == 1


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
    # Comparisons share provider calls: a round arrives at a worker together and goes out as one Message Batch
    # (how retries, which come back one at a time, are grouped depends on timing, so only the round is asserted).
    assert sim.stats["largest_batch"] > 1 and sim.stats["batches"] < rows


def test_a_message_batch_slower_than_the_expiry_age_completes_without_expiry_or_a_repeated_call(deployment, sim):
    settings = deployment(provider_mode="batches", max_processing_seconds=1.0)
    sim.configure(batch_delay_s=3.0)  # every Message Batch outlives the expiry age threefold
    supervisor = ray.get_actor(names.SUPERVISOR, namespace=settings.ray_namespace)
    batch_id = submit(settings, {"essays": essays(5, "slowmb"), "max_comparisons": 10})
    wait_until(lambda: sim.stats["batches_created"] > 0, what="a Message Batch at the provider")
    assert ray.get(supervisor.run_once.remote()).get("expired", 0) == 0  # held by its worker: not lost
    result = wait_for(settings, batch_id)
    assert result.state.value == "COMPLETED"
    ((rows, expired),) = sql(settings, "SELECT count(*), count(*) FILTER (WHERE error_code = 'QUEUE_TIMEOUT') "
                                       "FROM cj_comparison_pairs WHERE batch_id = :b", b=batch_id)
    assert expired == 0 and rows == sim.stats["requests"]  # every comparison sent once


def test_cancelling_a_batch_cancels_its_message_batch_at_the_provider(deployment, sim):
    settings = deployment(services=False, provider_mode="batches")
    sim.configure(batch_delay_s=120.0)
    batch_id = submit(settings, {"essays": essays(5, "cxmb"), "max_comparisons": 10})
    wait_until(lambda: sim.stats["batches_created"] > 0, what="a Message Batch at the provider")

    async def cancel() -> None:
        async with CJClient(settings) as client:
            await client.cancel(batch_id)

    asyncio.run(cancel())
    result = wait_for(settings, batch_id, timeout_s=60)  # not the 120 s the Message Batch would take
    assert result.state.value == "CANCELLED" and sim.stats["batches_cancelled"] >= 1
    assert repo_call(settings, "check_invariants", batch_id) == []
