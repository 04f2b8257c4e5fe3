"""`launch.py loadtest`: many ENG5-shaped batches at once against the simulated provider, optionally with
chaos (a random actor killed every few seconds and one PostgreSQL restart), then every batch checked from
the database alone (DESIGN §3 invariants 1–6) and one report printed.

The killer picks among the deployment's coordinators, provider workers, scorers, the Supervisor, the
outbox publisher and the rate limiter, and kills with `no_restart=False`: Ray restarts the actor, which
rebuilds itself from PostgreSQL; what died with it (calls in flight, queued requests) is expired by the
Supervisor after CJ_MAX_PROCESSING_SECONDS and retried as new attempts.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from sqlalchemy import text

from actors import names
from cjcore.contracts import TERMINAL_STATES, BatchState
from cjcore.sample import eng5_request
from cjcore.settings import Settings
from simprovider.server import SimProvider


@dataclass
class LoadPlan:
    batches: int
    max_comparisons: int = 60
    students: int = 12  # per batch, besides the 12 ENG5 anchors (the sample has 12; more are generated)
    concurrency: int | None = None  # batches in flight at once (None: all)
    rpm: int | None = None  # the pool's requests/min, for rate_limit_use
    chaos: bool = False
    kill_every_s: float = 3.0
    pg_restart_after_s: float | None = None  # with chaos and an embedded database
    pg_down_s: float = 2.0
    timeout_s: float = 600.0
    seed: int = 0


@dataclass
class Chaos:
    kills: Counter[str] = field(default_factory=Counter)
    pg_restarts: int = 0


def _victims(settings: Settings) -> list[str]:
    ns = settings.ray_namespace
    found = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == ns]
    wanted = ("cj-batch-", "cj-provider-", "cj-scoring-", names.SUPERVISOR, names.OUTBOX, names.LIMITER)
    return [n for n in found if n.startswith(wanted)]


def _kind(name: str) -> str:
    for prefix, kind in (("cj-batch-", "coordinator"), ("cj-provider-", "worker"), ("cj-scoring-", "scorer")):
        if name.startswith(prefix):
            return kind
    return name.removeprefix("cj-")


async def _killer(settings: Settings, plan: LoadPlan, chaos: Chaos, stop: asyncio.Event) -> None:
    rng = random.Random(plan.seed)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), plan.kill_every_s)
            return
        except TimeoutError:
            pass
        victims = _victims(settings)
        if not victims:
            continue
        name = rng.choice(victims)
        try:
            ray.kill(ray.get_actor(name, namespace=settings.ray_namespace), no_restart=False)
            chaos.kills[_kind(name)] += 1
        except ValueError:  # finished and gone in the meantime
            pass


async def _pg_restarter(pgdata: Path, plan: LoadPlan, chaos: Chaos, stop: asyncio.Event) -> None:
    from storage.database import restart_embedded

    assert plan.pg_restart_after_s is not None
    try:
        await asyncio.wait_for(stop.wait(), plan.pg_restart_after_s)
        return
    except TimeoutError:
        pass
    await asyncio.to_thread(restart_embedded, pgdata, plan.pg_down_s)
    chaos.pg_restarts += 1


async def run_load(settings: Settings, sim: SimProvider, plan: LoadPlan, pgdata: Path | None) -> dict[str, Any]:
    from driver.api import CJClient

    base = eng5_shaped(plan.students)
    base.update(max_comparisons=plan.max_comparisons, pair_generation_seed=None)
    chaos = Chaos()
    stop = asyncio.Event()
    sim.reset_stats()
    gate = asyncio.Semaphore(plan.concurrency or plan.batches)
    latencies: dict[str, float] = {}
    memory = asyncio.create_task(_peak_memory_mb(stop))
    async with CJClient(settings) as client:
        started = time.monotonic()

        async def one() -> str:
            async with gate:
                t0 = time.monotonic()
                batch_id = await client.submit(dict(base))
                try:
                    await client.wait(batch_id, timeout_s=plan.timeout_s, poll_s=0.25)
                finally:
                    latencies[batch_id] = time.monotonic() - t0
                return batch_id

        tasks = [asyncio.create_task(one()) for _ in range(plan.batches)]
        side = []
        if plan.chaos:
            side.append(asyncio.create_task(_killer(settings, plan, chaos, stop)))
            if pgdata is not None and plan.pg_restart_after_s is not None:
                side.append(asyncio.create_task(_pg_restarter(pgdata, plan, chaos, stop)))
        try:
            # Fairness: a small batch submitted while the load is queued should finish in seconds.
            small_started = time.monotonic()
            small = await client.submit({"essays": [{"essay_id": f"s{i}", "text": f"A short essay, number {i}."}
                                                    for i in range(4)], "max_comparisons": 6})
            await client.wait(small, timeout_s=plan.timeout_s, poll_s=0.1)
            small_latency = time.monotonic() - small_started
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            stop.set()
            await asyncio.gather(*side, return_exceptions=True)
        wall = time.monotonic() - started
        report = await _report(client, list(latencies), results, wall, sim, chaos, plan)
        ordered = sorted(latencies.values())
        report.update(
            batch_latency_p50_s=round(_quantile(ordered, 0.5), 2),
            batch_latency_p95_s=round(_quantile(ordered, 0.95), 2),
            small_batch_latency_s=round(small_latency, 2),
            http_429_share=round(sim.stats["rate_limited"] / max(1, sim.stats["requests"]), 4),
            rate_limit_use=round(sim.stats["requests"] / (wall / 60) / plan.rpm, 3) if plan.rpm else None,
        )
        baseline, peak = await memory
        live = max(1, min(len(latencies), plan.concurrency or len(latencies)))
        report.update(peak_memory_mb=round(peak), memory_per_batch_mb=round((peak - baseline) / live, 1))
        return report


def eng5_shaped(students: int) -> dict[str, Any]:
    """The ENG5 sample with `students` students: the sample's 12, then more made from them (new text, so
    the simulated judge gives them their own quality)."""
    request = eng5_request()
    anchors = [e for e in request["essays"] if e.get("is_anchor")]
    sample = [e for e in request["essays"] if not e.get("is_anchor")]
    made = [dict(e) if i < len(sample) else
            {"essay_id": f"student-x{i:03d}", "text": f"{e['text']}\n(Draft {i}.)"}
            for i, e in ((i, sample[i % len(sample)]) for i in range(students))]
    request["essays"] = anchors + made
    return request


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _peak_memory_mb(stop: asyncio.Event) -> tuple[float, float]:
    """(Before the load, peak) resident memory of this process and its descendants (a local Ray's raylet,
    workers and actors), in MB."""
    import psutil

    me = psutil.Process()
    peak = 0.0
    baseline: float | None = None
    while not stop.is_set():
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        peak = max(peak, total / 2**20)
        baseline = total / 2**20 if baseline is None else baseline
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass
    return baseline or 0.0, peak


async def _report(client: Any, ids: list[str], results: list[Any], wall: float, sim: SimProvider, chaos: Chaos,
                  plan: LoadPlan) -> dict[str, Any]:
    states: Counter[str] = Counter()
    problems: dict[str, list[str]] = {}
    for batch_id in ids:
        state, _ = await client.repo.state_of(batch_id)
        states[state.value] += 1
        bad = await client.repo.check_invariants(batch_id)
        if bad:
            problems[batch_id] = bad
    async with client.repo.engine.connect() as conn:
        row = (await conn.execute(text("""
SELECT count(*) AS attempts,
       count(*) FILTER (WHERE winner IS NULL) AS without_result,
       count(*) FILTER (WHERE winner IN ('essay_a', 'essay_b')) AS valid,
       count(*) FILTER (WHERE winner = 'error') AS errors,
       count(*) FILTER (WHERE winner IS NOT NULL
                          AND coalesce(error_code, '') NOT IN ('QUEUE_TIMEOUT', 'CANCELLED')) AS answered,
       count(*) FILTER (WHERE retry_of IS NOT NULL) AS retries,
       count(*) FILTER (WHERE error_code = 'QUEUE_TIMEOUT') AS expired,
       (SELECT sum(completed_comparisons + failed_comparisons) FROM cj_batch_states
         WHERE batch_id = ANY(:ids)) AS counted,
       (SELECT count(*) FROM cj_event_outbox WHERE aggregate_id = ANY(:ids)) AS events
  FROM cj_comparison_pairs WHERE batch_id = ANY(:ids)"""), {"ids": ids})).one()
        per_batch = Counter(r[0] for r in (await conn.execute(text(
            "SELECT count(*) FROM cj_event_outbox WHERE aggregate_id = ANY(:ids) GROUP BY aggregate_id"),
            {"ids": ids})).all())
    terminal = sum(n for s, n in states.items() if BatchState(s) in TERMINAL_STATES)
    recorded = row.valid + row.errors
    return {
        "batches": len(ids),
        "comparisons": recorded,
        "terminal": terminal,
        "completed": states.get("COMPLETED", 0),
        "failed": states.get("FAILED", 0),
        "cancelled": states.get("CANCELLED", 0),
        "wall_s": round(wall, 2),
        "comparisons_per_s": round(recorded / wall, 1) if wall else 0.0,
        "invariants_ok": not problems and terminal == len(ids),
        "results_recorded": recorded,
        "valid_results": row.valid,
        "error_results": row.errors,
        "retries": row.retries,
        "expired": row.expired,
        "lost_results": row.without_result,  # rows that never got a result (0 when every batch is terminal)
        "double_counted": (row.counted or 0) - recorded,  # counters beyond the rows (invariant 1)
        "provider_calls": sim.stats["requests"],
        "provider_calls_repeated": max(0, sim.stats["requests"] - row.answered),
        "events": row.events,
        "events_per_batch": {str(k): v for k, v in sorted(per_batch.items())},
        "chaos": plan.chaos,
        "kills": dict(chaos.kills),
        "kills_total": sum(chaos.kills.values()),
        "pg_restarts": chaos.pg_restarts,
        "wait_errors": [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)][:5],
        "problems": {k: v for k, v in list(problems.items())[:5]},
    }
