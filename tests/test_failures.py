"""Invariant 7: any actor killed, PostgreSQL restarted, `down` then `up` — every batch still ends terminal
with counters equal to the rows and exactly one outbox event. Each failure on its own, then all at once
(the chaos test)."""

from __future__ import annotations

import asyncio

import ray

from actors import names
from actors.deployment import deploy, resume, shutdown
from benches.loadtest import LoadPlan, run_load
from cjcore.contracts import BatchState
from storage.database import restart_embedded
from tests.helpers import (
    WebhookReceiver,
    essays,
    host_of,
    in_flight,
    repo_call,
    run_batch,
    sql,
    submit,
    submit_many,
    wait_for,
    wait_until,
)


def _finished_cleanly(settings, batch_id, state=BatchState.COMPLETED):
    result = wait_for(settings, batch_id)
    assert result.state is state, result.error
    assert repo_call(settings, "check_invariants", batch_id) == []
    assert len(repo_call(settings, "events", batch_id)) == 1
    return result


def _rows_with_results(settings, batch_id):
    return sql(settings, "SELECT count(*) FROM cj_comparison_pairs WHERE batch_id = :b AND winner IS NOT NULL",
               b=batch_id)[0][0]


def test_a_coordinator_host_killed_mid_round_rebuilds_its_batches_from_the_database(stack, sim):
    sim.configure(latency_ms=300.0)
    batch_id = submit(stack, {"essays": essays(10, "kc"), "max_comparisons": 30})
    wait_until(lambda: len(in_flight(stack, batch_id)) > 0, what="a round in flight")
    epoch = sql(stack, "SELECT owner_epoch FROM cj_batch_states WHERE batch_id = :b", b=batch_id)[0][0]
    ray.kill(host_of(stack, batch_id), no_restart=False)  # every batch it held goes with it; Ray restarts it
    result = _finished_cleanly(stack, batch_id)
    assert result.counters.submitted == 30
    assert sql(stack, "SELECT owner_epoch FROM cj_batch_states WHERE batch_id = :b", b=batch_id)[0][0] > epoch


def test_a_worker_killed_mid_call_leaves_its_pairs_to_expiry_and_new_attempts(deployment, sim):
    settings = deployment(workers=1)  # every call of the batch is on this one worker
    sim.configure(latency_ms=3000.0)
    batch_id = submit(settings, {"essays": essays(6, "kw"), "max_comparisons": 15})
    wait_until(lambda: sim.stats["requests"] > 0, what="a call at the provider")
    worker = ray.get_actor(names.provider(0), namespace=settings.ray_namespace)
    ray.kill(worker, no_restart=False)  # its calls and queue die with it; Ray restarts it empty
    sim.configure(latency_ms=0.0)
    supervisor = ray.get_actor(names.SUPERVISOR, namespace=settings.ray_namespace)
    # A sweep expires nothing while a worker cannot say what it holds (it is restarting): sweep until one can.
    wait_until(lambda: ray.get(supervisor.run_once.remote(max_processing_seconds=0.0)).get("expired", 0) > 0,
               what="the lost calls expired")
    result = _finished_cleanly(settings, batch_id)
    rows = sql(settings, """
        SELECT p.correlation_id, p.error_code, (SELECT count(*) FROM cj_comparison_pairs r
                                                 WHERE r.retry_of = p.correlation_id) AS retried
          FROM cj_comparison_pairs p WHERE p.batch_id = :b""", b=batch_id)
    expired = [r for r in rows if r.error_code == "QUEUE_TIMEOUT"]
    assert expired and all(r.retried == 1 for r in expired)  # each lost call: one new attempt
    assert result.counters.completed > 0


def test_the_scoring_actor_killed_during_scoring_is_restarted_and_the_fit_retried(deployment, sim):
    settings = deployment()
    scorer = ray.get_actor(names.scoring(0), namespace=settings.ray_namespace)
    sim.configure(latency_ms=50.0)
    batch_id = submit(settings, {"essays": essays(10, "ks"), "max_comparisons": 45, "completion_threshold_pct": 100})
    assert not ray.get(scorer.restarted.remote())
    for _ in range(3):  # kill it at each of the first rounds' scoring
        seen = sql(settings, "SELECT current_iteration FROM cj_batch_states WHERE batch_id = :b", b=batch_id)[0][0]
        wait_until(lambda seen=seen: sql(settings, "SELECT state, current_iteration FROM cj_batch_states "
                                                   "WHERE batch_id = :b", b=batch_id)[0] in
                   {("SCORING", seen), ("SCORING", seen + 1)} or _rows_with_results(settings, batch_id) == 45,
                   what="the batch scoring")
        ray.kill(scorer, no_restart=False)
    _finished_cleanly(settings, batch_id)
    assert ray.get(scorer.restarted.remote())  # the kills took: this is a restarted incarnation, and it answers


def test_the_supervisor_killed_comes_back_and_activates_an_admitted_batch_no_host_holds(deployment, sim):
    settings = deployment(max_live_batches=1)
    supervisor = ray.get_actor(names.SUPERVISOR, namespace=settings.ray_namespace)
    ray.kill(supervisor, no_restart=False)
    sim.configure(latency_ms=300.0)
    first = submit(settings, {"essays": essays(8, "kv"), "max_comparisons": 20})
    wait_until(lambda: len(in_flight(settings, first)) > 0, what="a round in flight")
    second = submit(settings, {"essays": essays(6, "kw"), "max_comparisons": 10})  # QUEUED: no room
    # Admitted, as if admission had died between admitting it and its activation: no host knows it.
    sql(settings, "UPDATE cj_batch_states SET state = 'INITIALIZING' WHERE batch_id = :b AND state = 'QUEUED'",
        b=second)
    done = ray.get(supervisor.run_once.remote())  # the restarted Supervisor, holding no state of its own
    assert done.get("coordinators_recreated", 0) == 1
    _finished_cleanly(settings, first)
    _finished_cleanly(settings, second)


def test_postgres_restarted_mid_run_loses_nothing(stack, sim, pg_data):
    sim.configure(latency_ms=100.0)
    ids = [submit(stack, {"essays": essays(10, f"pg{i}"), "max_comparisons": 30}) for i in range(3)]
    wait_until(lambda: _rows_with_results(stack, ids[0]) > 0, what="results being recorded")
    restart_embedded(pg_data, down_s=2.0)
    for batch_id in ids:
        result = _finished_cleanly(stack, batch_id)
        assert result.counters.submitted == 30


def test_down_then_up_resumes_every_batch_with_its_budget_and_counters(deployment, sim):
    settings = deployment(worker_max_in_flight=2)  # 4 calls at once: the rest of each round waits in a queue
    sim.configure(latency_ms=2000.0)  # four rounds of 2 s each: no batch can finish before `down`
    ids = submit_many(settings, [{"essays": essays(10, f"du{i}"), "max_comparisons": 40} for i in range(3)])
    wait_until(lambda: all(in_flight(settings, b) for b in ids), what="every batch in flight")
    summary = shutdown(settings, drain_timeout_s=30)
    assert summary["in_call"] == 0 and summary["undelivered"] == 0
    # Every call the provider received for these batches has landed in its row; nothing is terminal.
    rows = dict(sql(settings, "SELECT correlation_id, winner FROM cj_comparison_pairs WHERE batch_id = ANY(:ids)",
                    ids=ids))
    called = [cid for cid in sim.correlation_ids if cid in rows]
    assert called and all(rows[cid] is not None for cid in called)
    assert any(winner is None for winner in rows.values())  # what was dropped from the queues waits for `up`
    before = {b: repo_call(settings, "state_of", b) for b in ids}
    assert all(state not in {BatchState.COMPLETED, BatchState.FAILED} for state, _ in before.values()), before
    assert all(repo_call(settings, "check_invariants", b) == [] for b in ids)

    sim.configure(latency_ms=0.0)
    deploy(settings)
    resume(settings)  # the new hosts rebuild what they held; the sweep adopts anything they did not
    for batch_id in ids:
        result = _finished_cleanly(settings, batch_id)
        assert result.counters.total_budget == 40
        assert result.counters.submitted >= before[batch_id][1].submitted


def test_the_webhook_gets_each_event_at_least_once_and_one_event_id_per_batch(stack, deployment, sim, tmp_path):
    receiver = WebhookReceiver(fail_first=1)  # every event's first delivery fails: retried with backoff
    url_file = tmp_path / "webhook"  # the URL is a secret: the outbox reads it where it runs, not from its arguments
    url_file.write_text(receiver.start())
    # One publisher per database: the session's (no webhook) steps aside for this test.
    ray.kill(ray.get_actor(names.OUTBOX, namespace=stack.ray_namespace), no_restart=True)
    try:
        settings = deployment(event_webhook_url_file=url_file, outbox_poll_s=0.1)
        ids = [run_batch(settings, {"essays": essays(3, f"wh{i}"), "max_comparisons": 3}).batch_id for i in range(3)]
        wait_until(lambda: {p["aggregate_id"] for p in receiver.posts if p["aggregate_id"] in ids} == set(ids)
                   and all(e["published_at"] for b in ids for e in repo_call(settings, "events", b)),
                   timeout_s=60, what="every event delivered")
    finally:
        receiver.stop()
        deploy(stack)  # the session's publisher back
    mine = [p for p in receiver.posts if p["aggregate_id"] in ids]
    assert len(mine) >= 2 * len(ids)  # each was sent again after its failed first delivery
    for batch_id in ids:
        posts = [p for p in mine if p["aggregate_id"] == batch_id]
        assert len({p["id"] for p in posts}) == 1  # exactly one distinct event per batch
        assert all(p["key"] == p["id"] and p["event_type"] == "cj.batch.completed" for p in posts)


def test_the_supervisor_writes_a_missing_event_once_and_flags_missing_projections(stack, sim):
    result = run_batch(stack, {"essays": essays(6, "rep", anchors={"rep00": "A", "rep01": "F"}),
                               "max_comparisons": 15})
    sql(stack, "DELETE FROM cj_event_outbox WHERE aggregate_id = :b", b=result.batch_id)
    sql(stack, "DELETE FROM cj_grade_projections WHERE batch_id = :b", b=result.batch_id)
    supervisor = ray.get_actor(names.SUPERVISOR, namespace=stack.ray_namespace)
    done = ray.get(supervisor.run_once.remote())
    assert done["events_repaired"] == 1 and done["flagged_no_projections"] >= 1
    assert "events_repaired" not in ray.get(supervisor.run_once.remote())
    events = repo_call(stack, "events", result.batch_id)
    assert [e["event_type"] for e in events] == ["cj.batch.completed"]
    assert repo_call(stack, "check_invariants", result.batch_id) == []


def test_chaos_kills_and_a_postgres_restart_leave_every_batch_terminal_with_invariants(deployment, sim, pg_data):
    settings = deployment(supervisor_interval_s=1.0, max_processing_seconds=10.0, batch_idle_s=10.0)
    sim.configure(latency_ms=30.0, error_rate=0.08, overload_rate=0.06, malformed_rate=0.06)
    # Kills for the first 15 s (a kill every 1.5 s kept up for as long as recovery takes feeds on itself on
    # 2 cores: each worker kill costs an expiry), then recovery must bring every batch home.
    plan = LoadPlan(batches=6, max_comparisons=30, chaos=True, kill_every_s=1.5, kill_for_s=15.0,
                    pg_restart_after_s=4.0, pg_down_s=1.5, timeout_s=240, seed=7)
    report = asyncio.run(run_load(settings, sim, plan, pg_data))
    print(f"\nchaos: {report}")
    assert report["invariants_ok"], report["problems"]
    assert report["terminal"] == 6 and report["lost_results"] == 0 and report["double_counted"] == 0
    assert report["events_per_batch"] == {"1": 6}
    assert report["kills_total"] >= 3 and report["pg_restarts"] == 1
