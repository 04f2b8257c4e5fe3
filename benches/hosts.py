"""`launch.py bench hosts`: many batches in progress at once on this node, all waiting on a slow provider.

Every batch is the ENG5 sample (24 essays). The simulated provider runs in Message Batches mode and ends each
Message Batch an hour after its creation, so once a batch's first round is committed and handed to the pool it
has nothing to do but wait: its coordinator is passivated after CJ_PASSIVATE_AFTER_S. Measured: how long
admission takes to put them all in progress, the coordinator hosts' memory with every batch active and once
they are passivated (per batch), the node's memory, and the time to activate a passivated batch (a message to
its host: claim, load from PostgreSQL, reply)."""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

from cjcore.sample import eng5_request
from cjcore.settings import Settings
from simprovider.server import SimConfig

SUBMIT_CHUNK = 500


def _hosts_rss_mb() -> float:
    """Resident memory of this node's coordinator host processes, summed."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "CoordinatorHost" in " ".join(proc.info["cmdline"] or []):
                total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def _node_used_mb() -> float:
    import psutil

    vm = psutil.virtual_memory()
    return (vm.total - vm.available) / 2**20


async def _host_stats(settings: Settings) -> list[dict[str, Any]]:
    import ray

    from actors import names

    hosts = [ray.get_actor(names.coordinator_host(i), namespace=settings.ray_namespace)
             for i in range(settings.coordinator_hosts or 1)]
    return list(await asyncio.gather(*(h.stats.remote() for h in hosts)))


async def _until(check: Any, timeout_s: float, every_s: float = 0.5) -> float:
    """Wait until `check()` is true; returns the seconds waited."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"not reached within {timeout_s:g}s")
        await asyncio.sleep(every_s)
    return time.monotonic() - started


def run_hosts_bench(args: argparse.Namespace, settings: Settings, local_stack: Any) -> dict[str, Any]:
    from actors.activation import host_for
    from actors.deployment import resolve_hosts
    from driver.api import CJClient

    n = args.batches or 10_000
    settings = settings.model_copy(update={
        "provider_mode": "batches", "max_live_batches": n + 1, "passivate_after_s": args.passivate_after_s,
        "requests_per_minute": 10**7, "tokens_per_minute": 10**10,
        "max_processing_seconds": 10_000.0, "batch_idle_s": 10_000.0})
    request = eng5_request()
    request.update(max_comparisons=100, pair_generation_seed=None)
    with local_stack(settings, SimConfig(batch_delay_s=3600.0, seed=1)) as (settings, _):
        settings = resolve_hosts(settings)

        async def run() -> dict[str, Any]:
            async with CJClient(settings) as client:
                hosts_before, node_before = _hosts_rss_mb(), _node_used_mb()
                started = time.monotonic()
                ids: list[str] = []
                for i in range(0, n, SUBMIT_CHUNK):
                    ids += await client.submit_many([dict(request) for _ in range(min(SUBMIT_CHUNK, n - i))])
                submit_s = time.monotonic() - started

                async def all_waiting() -> bool:
                    stats = await _host_stats(settings)
                    return sum(s["active"] + s["passivated"] for s in stats) >= n and \
                        (await client.metrics.progress_of(ids))[2] >= n

                in_progress_s = await _until(all_waiting, args.timeout)
                peak_hosts, peak_node = _hosts_rss_mb(), _node_used_mb()
                active_then = sum(s["active"] for s in await _host_stats(settings))
                if args.passivate_after_s >= args.timeout:  # measuring active coordinators only
                    growth = peak_hosts - hosts_before
                    return {"batches": n, "in_progress": (await client.metrics.progress_of(ids))[2],
                            "active_when_measured": active_then,
                            "all_in_progress_s": round(in_progress_s + submit_s, 1),
                            "hosts_rss_growth_mb": round(growth),
                            "hosts_kb_per_active_batch": round(1024 * growth / max(1, active_then), 1),
                            "node_memory_growth_mb": round(peak_node - node_before)}

                async def all_passivated() -> bool:
                    return sum(s["passivated"] for s in await _host_stats(settings)) >= n

                passivate_s = await _until(all_passivated, args.timeout)
                passive_hosts = _hosts_rss_mb()
                sample = random.Random(1).sample(ids, min(200, n))
                activation_ms: list[float] = []
                for batch_id in sample:
                    host = host_for(batch_id, settings)
                    t0 = time.perf_counter()
                    await host.activate.remote(batch_id)
                    activation_ms.append(1000 * (time.perf_counter() - t0))
                in_progress = (await client.metrics.progress_of(ids))[2]
                return {
                    "bench": f"hosts: {n} ENG5 batches (24 essays) in progress at once, each waiting on a Message "
                             "Batch that ends after an hour (simulated provider)",
                    "batches": n,
                    "coordinator_hosts": settings.coordinator_hosts,
                    "in_progress": in_progress,
                    "submit_s": round(submit_s, 1),
                    "all_in_progress_s": round(in_progress_s + submit_s, 1),
                    "admission_ms_per_batch": round(1000 * (in_progress_s + submit_s) / n, 2),
                    # When the last batch came into progress; the earlier ones had mostly been passivated by then.
                    "active_when_measured": active_then,
                    "hosts_rss_growth_mb": round(peak_hosts - hosts_before),
                    "hosts_kb_per_batch_in_progress": round(1024 * (peak_hosts - hosts_before) / n, 1),
                    "node_memory_growth_mb": round(peak_node - node_before),
                    "node_kb_per_batch": round(1024 * (peak_node - node_before) / n, 1),
                    "passivated_all_after_s": round(passivate_s, 1),
                    "hosts_rss_mb_after_passivation": round(passive_hosts),
                    "activate_passivated_ms_p50": round(statistics.median(activation_ms), 2),
                    "activate_passivated_ms_p95": round(sorted(activation_ms)[int(0.95 * len(activation_ms))], 2),
                    "host_stats": await _host_stats(settings),
                }

        return asyncio.run(run())
