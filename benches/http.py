"""`bench http`: the HTTP layer of a running deployment (`up`), measured from this machine.

- `GET /v1/batches/{id}` of a COMPLETED ENG5 batch (its whole §4.2 result) for `--duration-s`, `--concurrency`
  at once, on an otherwise idle deployment: requests per second and latency.
- `POST /v1/batches`: then `--requests` ENG5 batches (24 essays each): the same. The deployment starts on them as
  they come (the figure includes that load); each is then cancelled over the API.
- Memory: the unique memory (USS) of the deployment's processes by group, the HTTP layer's (Ray Serve's
  controller, proxy and the replica) beside the rest: what `up` costs with the HTTP layer against without.

The load comes from one Python process (httpx) on the same node, so the figures are the pair's, client included.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from cjcore.contracts import TERMINAL_STATES, BatchState
from cjcore.sample import eng5_request
from cjcore.settings import Settings
from web import serving, tokens


async def _load(call: Callable[[int], Awaitable[httpx.Response]], *, concurrency: int, count: int | None = None,
                duration_s: float | None = None) -> dict[str, Any]:
    """Run `call` from `concurrency` tasks, `count` times in all or for `duration_s`; rate and latency."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_i = 0
    start = time.perf_counter()
    end = None if duration_s is None else start + duration_s

    async def worker() -> None:
        nonlocal next_i
        while (count is None or next_i < count) and (end is None or time.perf_counter() < end):
            i, next_i = next_i, next_i + 1
            t = time.perf_counter()
            response = await call(i)
            latencies.append(time.perf_counter() - t)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    latencies.sort()
    return {"requests": len(latencies), "wall_s": round(wall, 2), "per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1), "statuses": statuses}


def memory_by_group() -> dict[str, float]:
    """Unique memory (MB) of this node's deployment processes, by group (benches/processes.py)."""
    import psutil

    from benches.processes import ProcessGroups

    groups = ProcessGroups()
    out: dict[str, float] = {}
    for proc in psutil.process_iter():
        group = groups.of(proc)
        if group is None or group.startswith("driver"):
            continue
        try:
            uss = proc.memory_full_info().uss
        except psutil.Error:
            continue
        out[group] = out.get(group, 0.0) + uss / 2**20
    return {k: round(v, 1) for k, v in sorted(out.items())}


async def _bench(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    auth = {"Authorization": f"Bearer {tokens.read_token(settings)}"}
    request = eng5_request()
    run = uuid.uuid4().hex[:6]
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=serving.url(settings), headers=auth, timeout=120, limits=limits) as api:
        probe = f"bench-http-{run}-done"
        response = await api.post("/v1/batches", json={**request, "batch_id": probe})
        response.raise_for_status()
        while True:  # the GETs below read a COMPLETED batch's whole result
            state = (await api.get(f"/v1/batches/{probe}")).json()["state"]
            if BatchState(state) in TERMINAL_STATES:
                break
            await asyncio.sleep(0.5)
        got = await _load(lambda i: api.get(f"/v1/batches/{probe}"), concurrency=args.concurrency,
                          duration_s=args.duration_s)  # first, while the deployment is otherwise idle
        posted = await _load(lambda i: api.post("/v1/batches", json={**request, "batch_id": f"bench-http-{run}-{i}"}),
                             concurrency=args.concurrency, count=args.requests)
        memory = memory_by_group()
        for i in range(args.requests):
            await api.post(f"/v1/batches/bench-http-{run}-{i}/cancel")
    http_mb = memory.get("HTTP (Ray Serve)", 0.0)
    return {
        "what": f"one httpx client on this node, {args.concurrency} requests at once; POST: one ENG5 batch "
                f"({len(request['essays'])} essays) each; GET: the result of a COMPLETED ENG5 batch",
        "post_v1_batches": posted, "get_v1_batch": got,
        "memory_uss_mb": memory, "http_layer_mb": http_mb,
        "deployment_without_http_mb": round(sum(memory.values()) - http_mb, 1),
    }


def run_http_bench(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    return asyncio.run(_bench(args, settings))
