"""ProviderWorker: one async actor of the pool that calls the LLM.

Work arrives in per-batch queues and is taken round-robin across batches, so a small batch's pairs
interleave with a large one's instead of waiting behind it. A call starts only when a slot is free and
the rate limiter grants it. Results go back to the named coordinator in batches and are re-sent until
the coordinator acknowledges that they are committed (so a coordinator restart loses nothing).

Ray imports this module in every process that deserializes a handle to the worker (every coordinator),
so the `anthropic` SDK is imported inside the actor, not at module level.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque

import ray
from ray.exceptions import RayError

from actors import names
from cjcore.contracts import ComparisonRequest, ComparisonResult
from cjcore.settings import Settings
from cjcore.token_bucket import TokenBucket

log = logging.getLogger(__name__)


class ResultSender:
    """Delivers results to `cj-batch-<id>`, coalescing what arrives while a delivery is in flight."""

    def __init__(self, namespace: str, timeout_s: float):
        self._namespace = namespace
        self._timeout_s = timeout_s
        self._pending: dict[str, list[ComparisonResult]] = {}
        self._flushing: set[str] = set()
        self._handles: dict[str, ray.actor.ActorHandle] = {}
        self.delivered = 0
        self.dropped = 0

    def add(self, result: ComparisonResult) -> None:
        self._pending.setdefault(result.batch_id, []).append(result)
        if result.batch_id not in self._flushing:
            self._flushing.add(result.batch_id)
            asyncio.get_running_loop().create_task(self._flush(result.batch_id))

    async def _flush(self, batch_id: str) -> None:
        try:
            while self._pending.get(batch_id):
                await self._deliver(batch_id, self._pending.pop(batch_id))
        finally:
            self._flushing.discard(batch_id)

    async def _deliver(self, batch_id: str, results: list[ComparisonResult]) -> None:
        deadline = time.monotonic() + self._timeout_s
        delay = 0.05
        while True:
            try:
                handle = self._handles.get(batch_id)
                if handle is None:
                    handle = ray.get_actor(names.coordinator(batch_id), namespace=self._namespace)
                    self._handles[batch_id] = handle
                await handle.record_results.remote(results)
                self.delivered += len(results)
                return
            except (RayError, ValueError) as exc:  # ValueError: no actor of that name (yet, or any more)
                self._handles.pop(batch_id, None)
                if time.monotonic() > deadline:
                    # The rows stay without a result; the Supervisor expires them (invariant 7).
                    self.dropped += len(results)
                    log.warning("batch %s: gave up delivering %d results: %s", batch_id, len(results),
                                type(exc).__name__)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def forget(self, batch_id: str) -> None:
        self._handles.pop(batch_id, None)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class ProviderWorker:
    async def __init__(self, index: int, settings: Settings):
        self.index = index
        self._settings = settings
        from actors import provider_call

        self._compare = provider_call.compare
        self._client = provider_call.make_client(
            settings.api_key_value(), settings.provider_base_url, settings.provider_timeout_s
        )
        self._queues: OrderedDict[str, deque[ComparisonRequest]] = OrderedDict()
        self._known: set[str] = set()  # correlation ids queued or in flight here: re-sends are ignored
        self._work = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.worker_max_in_flight)
        # A simple share of the pool's requests/min; the pool-wide limiter replaces it (issue 3).
        self._bucket = TokenBucket.per_minute(settings.requests_per_minute / settings.workers, time.monotonic())
        self._sender = ResultSender(settings.ray_namespace, settings.result_delivery_timeout_s)
        self._calls = 0
        self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    async def enqueue(self, requests: list[ComparisonRequest]) -> int:
        accepted = 0
        for req in requests:
            if req.correlation_id in self._known:
                continue
            self._known.add(req.correlation_id)
            self._queues.setdefault(req.batch_id, deque()).append(req)
            accepted += 1
        if accepted:
            self._work.set()
        return accepted

    async def drop_batch(self, batch_id: str) -> list[str]:
        """Remove a batch's queued (not yet sent) requests; return their correlation ids."""
        queue = self._queues.pop(batch_id, deque())
        for req in queue:
            self._known.discard(req.correlation_id)
        return [req.correlation_id for req in queue]

    async def stats(self) -> dict[str, int]:
        return {
            "index": self.index,
            "queued": sum(len(q) for q in self._queues.values()),
            "batches_queued": len(self._queues),
            "calls": self._calls,
            "delivered": self._sender.delivered,
            "dropped": self._sender.dropped,
        }

    def _next(self) -> ComparisonRequest | None:
        """Round-robin: the head of the first batch's queue, then that batch goes to the back."""
        while self._queues:
            batch_id, queue = next(iter(self._queues.items()))
            if not queue:
                del self._queues[batch_id]
                continue
            self._queues.move_to_end(batch_id)
            return queue.popleft()
        return None

    async def _pump(self) -> None:
        while True:
            if not self._queues:
                self._work.clear()
                await self._work.wait()
                continue
            await self._slots.acquire()
            await self._take_permit()
            req = self._next()
            if req is None:
                self._slots.release()
                continue
            asyncio.get_running_loop().create_task(self._call(req))

    async def _take_permit(self) -> None:
        # Tokens refill with time, not on an event: sleeping exactly until one is due is the wait.
        wait = self._bucket.try_take(1.0, time.monotonic())
        while wait > 0:
            await asyncio.sleep(wait)
            wait = self._bucket.try_take(1.0, time.monotonic())

    async def _call(self, req: ComparisonRequest) -> None:
        try:
            self._calls += 1
            price = self._settings.price_for(req.model)
            outcome = await self._compare(self._client, req, price)
        finally:
            self._slots.release()
        self._known.discard(req.correlation_id)
        result = outcome.result
        if result.error_type is not None:
            log.warning(
                "provider error batch=%s correlation_id=%s type=%s status=%s request_id=%s model=%s",
                req.batch_id, req.correlation_id, result.error_type.value, result.http_status,
                result.provider_request_id, req.model,
            )
        self._sender.add(result)
