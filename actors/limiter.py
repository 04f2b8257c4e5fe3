"""RateLimiter (`cj-limiter`): the one limiter of the provider pool, whatever the number of workers and
batches. A thin shell around cjcore.rate_limit.PoolLimiter: requests are granted in arrival order (an
asyncio.Lock is FIFO), and the lock is held while waiting for refill, which is the queue. A restart is
safer than a first start: it begins empty (its predecessor may have just spent the server's allowance) and
holds at most one second's worth until a response's headers are seen, and reports for grants of the
previous incarnation are ignored."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

import ray

from cjcore.rate_limit import Grant, Limits, PoolLimiter

BATCHES_API = ":message-batches-api"
MAX_POOLS = 64  # (key, model) pools kept; the least recently used idle ones go first (a model name is free text)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class RateLimiter:
    def __init__(self, limits: Limits, batches_api: Limits | None = None):
        self._default = limits
        self._batches_api = batches_api or limits  # keys ending BATCHES_API: the Batches API's own limits
        self._pools: OrderedDict[str, PoolLimiter] = OrderedDict()  # per (key fingerprint, model), LRU
        self._lock: dict[str, asyncio.Lock] = {}
        self.granted = 0
        self.waited_s = 0.0
        self.foreign_reports = 0
        self._restarted = ray.get_runtime_context().was_current_actor_reconstructed

    def _pool(self, key: str) -> PoolLimiter:
        if key not in self._pools:
            limits = self._batches_api if key.endswith(BATCHES_API) else self._default
            self._pools[key] = PoolLimiter(limits, time.monotonic(), restarted=self._restarted)
            self._lock[key] = asyncio.Lock()
            self._forget_idle()
        self._pools.move_to_end(key)
        return self._pools[key]

    def _forget_idle(self) -> None:
        """Past MAX_POOLS, drop the least recently used pools nobody is waiting on (a dropped pool starts again
        as after a restart): the limiter's memory does not grow with every model name ever asked for."""
        for old in list(self._pools)[: max(0, len(self._pools) - MAX_POOLS)]:
            if not self._lock[old].locked():
                del self._pools[old], self._lock[old]

    async def acquire(self, key: str, input_tokens: list[int]) -> tuple[list[Grant], float]:
        """Wait until each request fits, in order (one for a Messages call, many for a Message Batch);
        returns the grants and the seconds waited."""
        pool = self._pool(key)
        started = time.monotonic()
        grants = []
        async with self._lock[key]:
            for tokens in input_tokens:
                while True:
                    wait, grant = pool.try_acquire(tokens, time.monotonic())
                    if grant is not None:
                        grants.append(grant)
                        break
                    await asyncio.sleep(wait)
        waited = time.monotonic() - started
        self.granted += len(grants)
        self.waited_s += waited
        return grants, waited

    async def report(
        self, key: str, reports: list[tuple[Grant, dict[str, str], tuple[int, int] | None, float | None, bool]]
    ) -> None:
        """After calls: per grant, the response headers, true usage (None if the request was refused), any
        retry-after, and whether the answer was a 529."""
        pool = self._pool(key)
        now = time.monotonic()
        for grant, headers, usage, retry_after_s, overloaded in reports:
            if not pool.report(grant, headers, usage, retry_after_s, now, overloaded=overloaded):
                self.foreign_reports += 1  # granted by this actor's previous incarnation: not ours to learn from

    async def stats(self) -> dict[str, object]:
        now = time.monotonic()
        return {"granted": self.granted, "waited_s": round(self.waited_s, 3), "foreign_reports": self.foreign_reports,
                "pools": {k: {"buckets": p.snapshot(now), "learned": p.learned} for k, p in self._pools.items()}}
