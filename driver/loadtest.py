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

    base = eng5_request()
    base.update(max_comparisons=plan.max_comparisons, pair_generation_seed=None)
    chaos = Chaos()
    stop = asyncio.Event()
    sim.reset_stats()
    async with CJClient(settings) as client:
        started = time.monotonic()
        ids = list(await asyncio.gather(*(client.submit(dict(base)) for _ in range(plan.batches))))
        side = []
        if plan.chaos:
            side.append(asyncio.create_task(_killer(settings, plan, chaos, stop)))
            if pgdata is not None and plan.pg_restart_after_s is not None:
                side.append(asyncio.create_task(_pg_restarter(pgdata, plan, chaos, stop)))
        try:
            results = await asyncio.gather(
                *(client.wait(b, timeout_s=plan.timeout_s, poll_s=0.25) for b in ids), return_exceptions=True
            )
        finally:
            stop.set()
            await asyncio.gather(*side, return_exceptions=True)
        wall = time.monotonic() - started
        return await _report(client, ids, results, wall, sim, chaos, plan)


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
