"""`launch.py loadtest`: many ENG5-shaped batches at once against the simulated provider, optionally with
chaos (a random actor killed every few seconds and one PostgreSQL restart), then every batch checked from
the database alone (DESIGN §3 invariants 1–6) and one report printed.

The killer picks among the deployment's coordinators, provider workers, scorers, admission, the Supervisor, the
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
from types import SimpleNamespace
from typing import Any

import ray

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
    # No throttle of its own: every batch is handed to the system at once (stored QUEUED); the product's
    # admission decides how many are live (CJ_MAX_LIVE_BATCHES) and in which order.
    rpm: int | None = None  # the pool's requests/min, for rate_limit_use_pct
    chaos: bool = False
    kill_every_s: float = 3.0
    kill_for_s: float | None = None  # stop killing after this long (None: until every batch is terminal)
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
    wanted = (names.HOST_PREFIX, "cj-provider-", "cj-scoring-", names.SUPERVISOR, names.OUTBOX, names.LIMITER,
              names.ADMISSION)
    return [n for n in found if n.startswith(wanted)]


def _kind(name: str) -> str:
    for prefix, kind in ((names.HOST_PREFIX, "coordinator_host"), ("cj-provider-", "worker"),
                         ("cj-scoring-", "scorer")):
        if name.startswith(prefix):
            return kind
    return name.removeprefix("cj-")


async def _killer(settings: Settings, plan: LoadPlan, chaos: Chaos, stop: asyncio.Event) -> None:
    rng = random.Random(plan.seed)
    until = time.monotonic() + plan.kill_for_s if plan.kill_for_s is not None else float("inf")
    while not stop.is_set() and time.monotonic() < until:
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


def use_ceiling_pct(calls: int, rpm: int, latency_ms: float, runs: int = 51) -> float:
    """The most `rate_limit_use_pct` a client could reach for `calls` at `rpm` with the simulated provider's
    latency (exponential, mean `latency_ms`): every call sent at the limit from the first instant (one second's
    worth at once, as our limiter starts), the run over at its slowest answer; the median of `runs` draws.
    E.g. 8,006 calls at 4,000/min and 3 s: the last answers land ~17 s after the last call is sent."""
    import numpy as np

    rate = rpm / 60
    sent = np.maximum(0.0, (np.arange(calls) - rate) / rate)  # the first second's worth goes at once
    rng = np.random.default_rng(0)
    latencies = rng.exponential(latency_ms / 1000, (runs, calls))
    wall = float(np.median((sent + latencies).max(axis=1)))
    return round(100 * calls / (wall / 60) / rpm, 1) if wall > 0 else 100.0


class ProviderStats:
    """What the provider served during the load: the local simulated server's counters, or `GET /stats`
    of the deployment's simulated server (--address); empty for the real API."""

    def __init__(self, sim: SimProvider | None, base_url: str | None):
        self._sim = sim
        self._url = f"{base_url.rstrip('/')}/stats" if base_url and sim is None else None
        self._start = self._read()

    def _read(self) -> dict[str, Any]:
        if self._sim is not None:
            return {**self._sim.stats, **self._sim.batch_stats()}
        if self._url is None:
            return {}
        import httpx

        try:
            return dict(httpx.get(self._url, timeout=5).json())
        except (httpx.HTTPError, ValueError):
            return {}

    def delta(self) -> dict[str, int]:
        end = self._read()
        return {k: v - self._start.get(k, 0) for k, v in end.items()
                if isinstance(v, int) and not isinstance(v, bool)}


SUBMIT_CHUNK = 200  # batches per submit transaction
SMALL_BATCH = {"essays": [{"essay_id": f"s{i}", "text": f"A short essay, number {i}."} for i in range(4)],
               "max_comparisons": 6}


async def run_load(settings: Settings, sim: SimProvider | None, plan: LoadPlan, pgdata: Path | None,
                   show_progress: bool = True) -> dict[str, Any]:
    from benches.processes import sample_memory
    from driver.api import CJClient

    base = eng5_shaped(plan.students)
    base.update(max_comparisons=plan.max_comparisons, pair_generation_seed=None)
    chaos = Chaos()
    stop = asyncio.Event()
    provider = ProviderStats(sim, settings.provider_base_url)
    latencies: dict[str, float] = {}
    submitted: list[str] = []
    # One watcher reads every batch's state each tick (a waiter per batch polled PostgreSQL 100 times a
    # second at 100 batches, on the cores the load runs on); it sets a batch's event when it is terminal.
    finished: dict[str, asyncio.Event] = {}
    memory = asyncio.create_task(sample_memory(stop))
    async with CJClient(settings) as client:
        started = time.monotonic()
        ids: list[str] = []
        for i in range(0, plan.batches, SUBMIT_CHUNK):  # one transaction per chunk, all QUEUED at once
            ids += await client.submit_many([dict(base) for _ in range(min(SUBMIT_CHUNK, plan.batches - i))])
        submit_s = time.monotonic() - started
        # Fairness: a small batch submitted last, behind the whole queue, should finish in seconds.
        small_started = time.monotonic()
        (small,) = await client.submit_many([dict(SMALL_BATCH)])
        for batch_id in [*ids, small]:
            finished[batch_id] = asyncio.Event()
            submitted.append(batch_id)

        async def one(batch_id: str, t0: float) -> str:
            try:
                await asyncio.wait_for(finished[batch_id].wait(), plan.timeout_s)
            except TimeoutError:
                raise TimeoutError(f"batch {batch_id} not terminal after {plan.timeout_s:g}s") from None
            finally:
                latencies[batch_id] = time.monotonic() - t0
            return batch_id

        tasks = [asyncio.create_task(one(b, started)) for b in ids]
        peak = [0]
        side = [asyncio.create_task(_watch(client, plan, submitted, finished, stop, show_progress, peak))]
        if plan.chaos:
            side.append(asyncio.create_task(_killer(settings, plan, chaos, stop)))
            if pgdata is not None and plan.pg_restart_after_s is not None:
                side.append(asyncio.create_task(_pg_restarter(pgdata, plan, chaos, stop)))
        try:
            small_result = await asyncio.gather(one(small, small_started), return_exceptions=True)
            small_latency = latencies[small]
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            stop.set()
            await asyncio.gather(*side, return_exceptions=True)
        wall = time.monotonic() - started
        served = provider.delta()
        report = await _report(client, ids, [small], [*results, *small_result], wall, served, chaos, plan)
        ordered = sorted(latencies[b] for b in ids)
        calls = report["provider_calls"] if report["provider_calls"] is not None else report["http_answers"]
        report.update(
            batch_latency_p50_s=round(_quantile(ordered, 0.5), 2),
            batch_latency_p95_s=round(_quantile(ordered, 0.95), 2),
            batch_latency_max_s=round(ordered[-1], 2) if ordered else 0.0,
            small_batch_latency_s=round(small_latency, 2),
            submit_s=round(submit_s, 2),
            # Calls the provider served over what the rate limit allows in the wall time (Messages mode: 1.0 is
            # a run bound by the limit alone; wall ≤ 1.15 × the limit's own time is ≥ 0.87).
            rate_limit_use_pct=round(100 * calls / (wall / 60) / plan.rpm, 1) if plan.rpm and wall else None,
        )
        if sim is not None and sim.arrivals and plan.rpm:
            # The same up to the last request the provider received: the rest of the wall is that request's
            # answer, and the slowest answers of the last seconds (an exponential latency's tail), which no
            # client can shorten without sending calls twice.
            sending = sim.arrivals[-1] - started
            report.update(sending_s=round(sending, 2), after_last_request_s=round(wall - sending, 2),
                          rate_limit_use_while_sending_pct=round(100 * calls / (sending / 60) / plan.rpm, 1),
                          rate_limit_use_ceiling_pct=use_ceiling_pct(calls, plan.rpm, sim.config.latency_ms))
        mem = await memory
        report.update(
            peak_in_progress=peak[0],
            peak_memory_mb=round(mem.peak_mb),
            baseline_memory_mb=round(mem.baseline_mb),
            memory_growth_mb=round(mem.peak_mb - mem.baseline_mb),
            memory_per_batch_in_progress_kb=round(1024 * (mem.peak_mb - mem.baseline_mb) / max(1, peak[0]), 1),
            coordinator_host_private_mb=round(mem.coordinator_private_mb, 1),
        )
        return report


async def _watch(client: Any, plan: LoadPlan, submitted: list[str], finished: dict[str, asyncio.Event],
                 stop: asyncio.Event, show: bool, peak: list[int]) -> None:
    """Every half second: the submitted batches' states (setting `finished` of those now terminal, `peak[0]`
    the most in progress at once) and a progress bar on stderr (batches terminal of all, results recorded,
    batches in progress)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from driver import render

    columns = (TextColumn("loadtest"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=render.err_console, transient=True, disable=not show) as bar:
        task = bar.add_task("batches", total=plan.batches, detail="")
        while not stop.is_set():
            if submitted:
                terminal, results, in_progress = await client.metrics.progress_of(list(submitted))
                peak[0] = max(peak[0], in_progress)
                for batch_id in terminal:
                    finished[batch_id].set()
                bar.update(task, completed=len(terminal),
                           detail=f"{results} results, {in_progress} batches in progress")
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass


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


async def _report(client: Any, ids: list[str], others: list[str], results: list[Any], wall: float,
                  served: dict[str, int], chaos: Chaos, plan: LoadPlan) -> dict[str, Any]:
    """The load's batches `ids` checked from the database; `others` (the small batch) also went through the
    provider, so they count where the provider's own figures are compared with the rows."""
    states: Counter[str] = Counter()
    problems: dict[str, list[str]] = {}
    rounds = 0
    for batch_id in ids:
        state, counters = await client.reads.state_of(batch_id)
        states[state.value] += 1
        rounds = max(rounds, counters.iterations)
        bad = await client.metrics.check_invariants(batch_id)
        if bad:
            problems[batch_id] = bad
    row = SimpleNamespace(**await client.metrics.load_report(ids, others))
    per_batch = Counter(row.events_per_batch)
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
        "http_answers": row.http_answers,
        "http_429_share": round(row.http_429 / row.http_answers, 4) if row.http_answers else 0.0,
        # What the provider served (the simulated server's own count; None for the real API). Calls are
        # repeated after a crash (invariant 7): served minus answered rows.
        "provider_calls": served.get("requests"),
        "provider_calls_repeated": max(0, served["requests"] - row.answered) if "requests" in served else None,
        "max_rounds": rounds,  # the most rounds (provider round trips, retries aside) any batch took
        # Message Batches (the simulator's figures): items billed (ended `succeeded`) against verdicts recorded,
        # and Message Batches that ended unread (each one bought must be read or cancelled: invariant 13).
        "message_batches_created": served.get("batches_created"),
        "message_batch_creates_lost": served.get("batch_creates_lost"),
        "message_batch_items_billed": served.get("batch_items_billed"),
        "verdicts_recorded": row.valid_all,  # the load's and the small batch's: what billed items should equal
        "message_batches_unread": served.get("batches_unread"),
        "events": row.events,
        "events_per_batch": {str(k): v for k, v in sorted(per_batch.items())},
        "chaos": plan.chaos,
        "kills": dict(chaos.kills),
        "kills_total": sum(chaos.kills.values()),
        "pg_restarts": chaos.pg_restarts,
        "wait_errors": [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)][:5],
        "problems": {k: v for k, v in list(problems.items())[:5]},
    }
