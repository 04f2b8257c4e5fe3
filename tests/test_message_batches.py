"""The Message Batches path (CJ_PROVIDER_MODE=batches): many comparisons per provider call through the
real SDK's `messages.batches`, against the simulated server's batch endpoints."""

from __future__ import annotations

import asyncio
import time

import pytest
import ray

from actors import names, provider_call
from actors.deployment import deploy, resume, shutdown
from cjcore.contracts import ComparisonRequest, ErrorType
from cjcore.message_batch import Listed, lost_create
from cjcore.settings import DEFAULT_PRICES
from driver.api import CJClient
from tests.conftest import TEST_API_KEY
from tests.helpers import essays, repo_call, run_batches, sql, submit, submit_many, wait_for, wait_until

PRICE = DEFAULT_PRICES["claude-haiku-4-5"]


def _requests(n: int) -> list[ComparisonRequest]:
    return [ComparisonRequest(correlation_id=f"cid-{i}", batch_id="b", essay_a_id=f"a{i}", essay_b_id=f"b{i}",
                              text_a=f"first essay {i}", text_b=f"second essay {i}", instructions="Judge.",
                              model="claude-haiku-4-5", temperature=0.0, max_tokens=256) for i in range(n)]


def _items(reqs):
    return [(r.correlation_id, r.batch_id) for r in reqs]


def _through(sim, reqs, outage_s=10.0, after_create=lambda: None):
    """Create, poll until ended, read: one Message Batch."""
    async def go():
        client = provider_call.make_client(TEST_API_KEY, f"http://127.0.0.1:{sim.port}", 10)
        api = provider_call.UNLIMITED
        batch_id, _ = await provider_call.create_message_batch(client, reqs, api)
        after_create()
        while True:
            status = await provider_call.poll_message_batch(client, batch_id, api, cancel=False, outage_s=outage_s,
                                                            max_delay_s=0.05)
            if status == "ended":
                break
            await asyncio.sleep(0.02)
        return await provider_call.message_batch_outcomes(client, batch_id, _items(reqs), PRICE, api, latency_ms=1,
                                                          outage_s=outage_s, max_delay_s=0.05)

    return asyncio.run(go())


def test_one_message_batch_answers_every_request_in_order_at_half_price(sim):
    sim.configure(latency_ms=50)  # the batch is "in_progress" at first: the client polls until "ended"
    reqs = _requests(40)
    outcomes = _through(sim, reqs)
    assert [o.result.correlation_id for o in outcomes] == [r.correlation_id for r in reqs]
    assert all(o.result.error_type is None for o in outcomes)
    assert sim.stats["batches"] == 1 and sim.stats["requests"] == 40
    assert sim.batch_stats() == {"batch_items_billed": 40, "batches_unread": 0}
    r = outcomes[0].result
    full = provider_call.cost_usd(PRICE, r.input_tokens, r.output_tokens, 0, 0)
    assert r.cost_usd == pytest.approx(provider_call.BATCH_DISCOUNT * full)


def test_errored_and_expired_items_become_typed_error_results(sim):
    sim.configure(error_rate=0.25, overload_rate=0.25, timeout_rate=0.25)
    outcomes = _through(sim, _requests(200))
    kinds = {o.result.error_type for o in outcomes}
    assert {ErrorType.SERVER_ERROR, ErrorType.OVERLOADED, ErrorType.TIMEOUT, None} <= kinds
    assert sum(o.result.error_type is ErrorType.SERVER_ERROR for o in outcomes) == sim.stats["server_errors"]
    assert sum(o.result.error_type is ErrorType.TIMEOUT for o in outcomes) == sim.stats["timeouts"]
    assert sim.batch_stats()["batch_items_billed"] == sum(o.result.error_type is None for o in outcomes)


def test_failed_polls_and_reads_are_retried_never_a_second_message_batch(sim):
    sim.configure(batch_delay_s=1.0)
    # Once the create has answered, half of the polls and reads are refused with 529.
    outcomes = _through(sim, _requests(5), outage_s=None,
                        after_create=lambda: sim.configure(batch_delay_s=1.0, batch_api_overload_rate=0.5))
    assert [o.result.error_type for o in outcomes] == [None] * 5
    assert sim.stats["batch_api_overloaded"] > 0 and sim.stats["batches_created"] == 1
    assert sim.stats["requests"] == 5  # retried calls of the API, never a second judging of the items


def test_a_create_whose_answer_was_lost_is_found_in_the_list_and_is_the_only_one_bought(sim):
    sim.configure(batch_create_lost_rate=1.0, batch_delay_s=0.5)
    reqs = _requests(7)

    async def go():
        client = provider_call.make_client(TEST_API_KEY, f"http://127.0.0.1:{sim.port}", 10)
        sent_at = time.time()
        with pytest.raises(provider_call.Lost):
            await provider_call.create_message_batch(client, reqs, provider_call.UNLIMITED)
        listed = await provider_call.recent_message_batches(client, sent_at - 60, provider_call.UNLIMITED,
                                                            outage_s=10, max_delay_s=0.05)
        return lost_create(listed, len(reqs), sent_at, ours=set())

    found = asyncio.run(go())
    assert found is not None and found.items == 7
    assert sim.stats["batch_creates_lost"] == 1 and sim.stats["batches_created"] == 1
    wait_until(lambda: sim.batch_stats()["batches_unread"] == 1, what="the Message Batch to end, unread")


def test_a_lost_create_is_matched_by_size_time_and_not_being_ours_already():
    listed = [Listed("new", 1_000.0, 7), Listed("ours", 999.0, 7), Listed("other-size", 1_000.0, 8),
              Listed("long-before", 800.0, 7)]
    assert lost_create(listed, 7, sent_at=999.5, ours={"ours"}) == listed[0]
    assert lost_create(listed, 7, sent_at=999.5, ours={"ours", "new"}) is None
    assert lost_create(listed, 9, sent_at=999.5, ours=set()) is None


def _paid_once(settings, sim, batch_ids):
    """Every Message Batch bought was read, each item billed was recorded once, none was bought twice."""
    ((verdicts, rows),) = sql(settings, "SELECT count(*) FILTER (WHERE winner IN ('essay_a', 'essay_b')), count(*) "
                                        "FROM cj_comparison_pairs WHERE batch_id = ANY(:b)", b=batch_ids)
    states = dict(sql(settings, "SELECT state, count(*) FROM cj_message_batches WHERE ray_namespace = :ns "
                                "GROUP BY state", ns=settings.ray_namespace))
    assert sim.batch_stats() == {"batch_items_billed": verdicts, "batches_unread": 0}
    assert rows == sim.stats["requests"]  # each comparison row went to the provider once
    assert states.get("read", 0) + states.get("cancelled", 0) == sim.stats["batches_created"], states
    assert states.get("creating", 0) == states.get("pending", 0) == 0


def test_batches_mode_end_to_end_with_retries_every_create_lost_and_invariants(deployment, sim):
    settings = deployment(services=False, provider_mode="batches", batch_window_s=0.05)
    sim.configure(error_rate=0.1, batch_create_lost_rate=1.0)  # every create answered by a closed connection
    requests = [{"essays": essays(8, f"mb{i}-"), "max_comparisons": 28} for i in range(3)]
    results = run_batches(settings, requests)
    assert [r.state.value for r in results] == ["COMPLETED"] * 3
    for r in results:
        assert repo_call(settings, "check_invariants", r.batch_id) == []
    errors = sql(settings, "SELECT count(*) FILTER (WHERE winner = 'error') FROM cj_comparison_pairs "
                           "WHERE batch_id = ANY(:b)", b=[r.batch_id for r in results])[0][0]
    assert errors == sim.stats["server_errors"] > 0
    assert sim.stats["batch_creates_lost"] == sim.stats["batches_created"] > 0  # each adopted, none bought twice
    _paid_once(settings, sim, [r.batch_id for r in results])
    # Comparisons share provider calls: a round arrives at a worker together and goes out as one Message Batch
    # (how retries, which come back one at a time, are grouped depends on timing, so only the round is asserted).
    assert sim.stats["largest_batch"] > 1 and sim.stats["batches"] < sim.stats["requests"]


def test_a_message_batch_slower_than_the_expiry_age_is_waited_on_not_expired_nor_stuck(deployment, sim):
    settings = deployment(provider_mode="batches", max_processing_seconds=1.0, batch_idle_s=1.0)
    sim.configure(batch_delay_s=4.0)  # every Message Batch outlives the expiry age and the idle limit
    supervisor = ray.get_actor(names.SUPERVISOR, namespace=settings.ray_namespace)
    batch_id = submit(settings, {"essays": essays(5, "slowmb"), "max_comparisons": 10})
    wait_until(lambda: sim.stats["batches_created"] > 0, what="a Message Batch at the provider")

    async def waiting():
        async with CJClient(settings) as client:
            return (await client.health(batch_id))[0]["message_batches"]

    wait_until(lambda: (w := asyncio.run(waiting())) and w[0]["polled_at"] is not None
               and time.time() - w[0]["created_at"].timestamp() > 1.5, what="a Message Batch waited on for 1.5 s")
    assert ray.get(supervisor.run_once.remote()).get("expired", 0) == 0  # waiting in a Message Batch: not lost
    # Quiet for longer than CJ_BATCH_IDLE_S, yet waiting, not stuck: neither nudged nor counted by CJBatchStuck
    # (both read the same condition).
    assert sql(settings, "SELECT extract(epoch FROM now() - last_activity_at) FROM cj_batch_states "
                         "WHERE batch_id = :b", b=batch_id)[0][0] > 1.0
    assert batch_id not in repo_call(settings, "idle_batch_ids", 1.0, settings.ray_namespace, settings.batch_poll_max_s)
    result = wait_for(settings, batch_id)
    assert result.state.value == "COMPLETED"
    ((rows, expired),) = sql(settings, "SELECT count(*), count(*) FILTER (WHERE error_code = 'QUEUE_TIMEOUT') "
                                       "FROM cj_comparison_pairs WHERE batch_id = :b", b=batch_id)
    assert expired == 0 and rows == sim.stats["requests"]  # every comparison sent once
    _paid_once(settings, sim, [batch_id])


def test_a_worker_killed_while_its_message_batch_is_pending_reads_it_after_its_restart(deployment, sim):
    settings = deployment(services=False, provider_mode="batches", workers=1)
    sim.configure(batch_delay_s=3.0)
    batch_id = submit(settings, {"essays": essays(6, "kmb"), "max_comparisons": 15})
    wait_until(lambda: sql(settings, "SELECT count(*) FROM cj_message_batches WHERE ray_namespace = :ns AND "
                                     "state = 'pending'", ns=settings.ray_namespace)[0][0] > 0,
               what="a pending Message Batch recorded")
    ray.kill(ray.get_actor(names.provider(0), namespace=settings.ray_namespace), no_restart=False)
    result = wait_for(settings, batch_id)
    assert result.state.value == "COMPLETED"
    assert repo_call(settings, "check_invariants", batch_id) == []
    _paid_once(settings, sim, [batch_id])


def test_down_while_message_batches_are_pending_then_up_reads_them_and_buys_nothing_twice(deployment, sim):
    settings = deployment(provider_mode="batches")
    sim.configure(batch_delay_s=4.0)
    ids = submit_many(settings, [{"essays": essays(6, f"dmb{i}"), "max_comparisons": 15} for i in range(2)])
    wait_until(lambda: sql(settings, "SELECT count(*) FROM cj_message_batches WHERE ray_namespace = :ns AND "
                                     "state = 'pending'", ns=settings.ray_namespace)[0][0] > 0,
               what="a pending Message Batch recorded")
    summary = shutdown(settings, drain_timeout_s=5)
    assert summary["in_call"] == 0  # a pending Message Batch is not a call in flight: `down` does not wait for it
    assert sql(settings, "SELECT count(*) FROM cj_message_batches WHERE ray_namespace = :ns AND state = 'pending'",
               ns=settings.ray_namespace)[0][0] > 0  # left in PostgreSQL for `up`
    deploy(settings)
    resume(settings)
    for batch_id in ids:
        result = wait_for(settings, batch_id)
        assert result.state.value == "COMPLETED"
        assert repo_call(settings, "check_invariants", batch_id) == []
    _paid_once(settings, sim, ids)


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
