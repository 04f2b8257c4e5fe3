"""ProviderWorker: one async actor of the pool that calls the LLM.

Work arrives in per-batch queues and is taken round-robin across batches, so a small batch's pairs
interleave with a large one's instead of waiting behind it. A call starts only when a slot is free and
the rate limiter grants it. Results go back to the batch's coordinator host in batches and are re-sent until
the host acknowledges that they are committed (so a coordinator or host restart loses nothing).

The worker holds a lease on every request from enqueue until its result is acknowledged (`held`): the
Supervisor expires only what no live worker holds, so time queued here never makes a second call.

Ray imports this module in every process that deserializes a handle to the worker (every coordinator host),
so the `anthropic` SDK is imported inside the actor, not at module level.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayError

from actors import metrics, names
from actors.limiter import BATCHES_API
from cjcore.contracts import ComparisonRequest, ComparisonResult
from cjcore.rate_limit import acquire_depth, calls_in_flight
from cjcore.retry import backoff_s
from cjcore.retrying import retrying
from cjcore.settings import Settings

log = logging.getLogger(__name__)


CREATES_AT_ONCE = 4  # Message Batches mode: creates in flight per worker (a pending Message Batch holds no slot)
MESSAGE_BATCH_MAX_CHARS = 200_000_000  # of essay text per Message Batch: under the API's 256 MB with the JSON
PERMIT_GROUP = 4  # Messages mode: requests that share one permit request to the limiter, at most
REPORT_EVERY_S = 0.05  # limiter reports are gathered this long (one Ray call per key, not per comparison)
MIN_SLOTS = 16  # calls in flight per worker before latencies are known (Messages mode, adaptive)


DROPPED_KEPT = 10_000  # cancelled or given-up batches a worker remembers (the latest): bounded, whatever the history


class RecentIds:
    """A set that keeps only the `size` ids added last."""

    def __init__(self, size: int):
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, value: str) -> None:
        self._ids[value] = None
        self._ids.move_to_end(value)
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)

    def __contains__(self, value: object) -> bool:
        return value in self._ids


class Slots:
    """A semaphore whose size can change: calls at the provider at once."""

    def __init__(self, size: int):
        self.size = size
        self.used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        if self.used >= self.size:
            return False
        self.used += 1
        return True

    async def acquire(self) -> None:
        while self.used >= self.size:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        self.used += 1

    def release(self) -> None:
        self.used -= 1
        self._wake()

    def resize(self, size: int) -> None:
        self.size = size
        self._wake()

    def _wake(self) -> None:
        free = self.size - self.used
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1


class _NotAcknowledged(Exception):
    """Some results of a delivery were not acknowledged (their batch's coordinator failed to record them)."""


class ResultSender:
    """Delivers results to the coordinator hosts: one call per host for whatever arrived while its previous
    delivery was in flight, whichever batches they belong to (a call per result costs a Ray round trip on each
    side; with many batches in progress, per-batch coalescing left mostly one result a call). Results a host
    does not acknowledge are re-sent until it does."""

    def __init__(self, namespace: str, hosts: int, timeout_s: float, done: Callable[[list[str]], None]):
        self._namespace = namespace
        self._hosts = hosts
        self._done = done  # told the ids acknowledged or given up on ([] when a host's deliveries end)
        self._timeout_s = timeout_s
        self._pending: dict[int, list[ComparisonResult]] = {}
        self._flushing: set[int] = set()
        self._handles: dict[int, ray.actor.ActorHandle] = {}  # one per host: bounded, whatever the history
        self.delivered = 0

    def idle(self) -> bool:
        return not self._flushing

    def pending(self) -> int:
        return sum(len(v) for v in self._pending.values())

    def add(self, result: ComparisonResult) -> None:
        index = names.host_index(result.batch_id, self._hosts)
        self._pending.setdefault(index, []).append(result)
        if index not in self._flushing:
            self._flushing.add(index)
            asyncio.get_running_loop().create_task(self._flush(index))

    async def _flush(self, index: int) -> None:
        try:
            while self._pending.get(index):
                await self._deliver(index, self._pending.pop(index))
        finally:
            self._flushing.discard(index)
            self._done([])

    async def _deliver(self, index: int, results: list[ComparisonResult]) -> None:
        """Until the host acknowledges every result: a result not delivered stays held by this worker (its lease
        keeps the Supervisor from expiring and buying it again) until delivered or the worker dies. Past
        CJ_RESULT_DELIVERY_TIMEOUT_S a warning says so, once."""
        left = results
        started = time.monotonic()
        warned = False

        def unavailable(exc: Exception) -> bool:  # ValueError: no actor of that name (yet, or any more)
            nonlocal warned
            if not isinstance(exc, _NotAcknowledged):
                self._handles.pop(index, None)
            if not warned and time.monotonic() - started > self._timeout_s:
                warned = True
                log.warning("%d results for %s undelivered for %.0f s (%s); still held and retried", len(left),
                            names.coordinator_host(index), self._timeout_s, type(exc).__name__)
            return isinstance(exc, RayError | ValueError | _NotAcknowledged)

        async for attempt in retrying(unavailable, within_s=None, first_s=0.05, max_s=10.0):
            with attempt:
                handle = self._handles.get(index)
                if handle is None:
                    handle = ray.get_actor(names.coordinator_host(index), namespace=self._namespace)
                    self._handles[index] = handle
                acked = set(await handle.record_many.remote(left))
                left = [r for r in left if r.correlation_id not in acked]
                if left:
                    raise _NotAcknowledged
        self.delivered += len(results)
        self._done([r.correlation_id for r in results])


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class ProviderWorker:
    async def __init__(self, index: int, settings: Settings):  # type: ignore[misc]  # Ray awaits async constructors
        self.index = index
        self._settings = settings
        metrics.configure(settings.ray_namespace)
        from actors import provider_call

        # httpx logs every request at INFO: a line per comparison (a twentieth of a worker's CPU under load,
        # and nothing the provider-error lines do not say better).
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self._provider_call = provider_call
        self._compare = provider_call.compare
        self._batches = settings.provider_mode == "batches"
        self._client = provider_call.make_client(
            settings.api_key_value(), settings.provider_base_url, settings.provider_timeout_s
        )
        self._queues: OrderedDict[str, deque[ComparisonRequest]] = OrderedDict()
        # Correlation ids queued, in flight or with a result not yet acknowledged here: a coordinator that
        # restarts re-sends its rows without a result, and those must not become second provider calls.
        self._known: set[str] = set()
        # Batches cancelled or given up: their comparisons still inside a Message Batch are cancelled there.
        self._dropped = RecentIds(DROPPED_KEPT)
        self._work = asyncio.Event()
        # Calls at the provider at once: comparisons in "messages" mode; Message Batch creates in "batches" mode
        # (a pending Message Batch holds none).
        self._slots = Slots(CREATES_AT_ONCE if self._batches else settings.worker_max_in_flight or MIN_SLOTS)
        # Latencies of recent answered calls: the calls in flight follow them (Little's law), unless fixed.
        self._latencies: deque[float] = deque(maxlen=256)
        self._adaptive = not self._batches and settings.worker_max_in_flight is None
        self._reports: dict[str, list[Any]] = {}  # limiter reports not yet sent, by key
        self._reporting = False
        self._answered = 0
        # Permit requests waiting at the limiter at once (the rest wait in the round-robin queues).
        self._asking = asyncio.Semaphore(acquire_depth(settings.requests_per_minute, settings.workers))
        self._estimate = provider_call.estimate_input_tokens
        self._limiter = ray.get_actor(names.LIMITER, namespace=settings.ray_namespace)
        # The limiter keys its buckets by a fingerprint of the key, never the key itself.
        self._key_id = hashlib.sha256(settings.api_key_value().encode()).hexdigest()[:12]
        self._provider = "anthropic" if settings.uses_real_anthropic else "simulated"
        self._progress = asyncio.Event()  # a call ended or results were settled (for `drain`)
        self._sender = ResultSender(settings.ray_namespace, settings.coordinator_hosts or 1,
                                    settings.result_delivery_timeout_s, self._settled)
        self._calls = 0
        self._in_call = 0
        self._draining = False
        self._message_batches = None
        if self._batches:
            from actors.message_batches import MessageBatches
            from storage.database import make_engine
            from storage.message_batches import MessageBatchStore

            self._engine = make_engine(settings.database_url_value(), pool_size=2, max_overflow=2)
            self._message_batches = MessageBatches(
                index, settings, self._client, MessageBatchStore(self._engine, settings.database_outage_s),
                self._batch_api(), self._deliver_message_batch, self._dropped)
            self._known.update(await self._message_batches.resume())
        self._pump_task = asyncio.get_running_loop().create_task(
            self._pump_message_batches() if self._batches else self._pump())

    async def enqueue(self, requests: list[ComparisonRequest]) -> int:
        if self._draining:
            return 0  # shutting down: the rows stay without a result and are re-sent after `up`
        accepted = 0
        for req in requests:
            if req.correlation_id in self._known or req.batch_id in self._dropped:
                continue  # held already, or its batch was cancelled or given up: never bought
            self._known.add(req.correlation_id)
            self._queues.setdefault(req.batch_id, deque()).append(req)
            accepted += 1
        if accepted:
            self._work.set()
        return accepted

    async def held(self, correlation_ids: list[str]) -> list[str]:
        """The lease: which of these requests this worker holds (queued, waiting for a permit, at the
        provider, or with a result not yet acknowledged). The Supervisor expires only work no live worker
        holds, so time spent queued here is never held against a request (invariant 11)."""
        return [cid for cid in correlation_ids if cid in self._known]

    async def forget(self, correlation_ids: list[str]) -> int:
        """Drop these requests if they are still queued (expired or otherwise recorded): never sent."""
        gone = set(correlation_ids)
        dropped: set[str] = set()
        for batch_id, queue in list(self._queues.items()):
            dropped.update(r.correlation_id for r in queue if r.correlation_id in gone)
            self._queues[batch_id] = deque(r for r in queue if r.correlation_id not in gone)
        self._known.difference_update(dropped)  # what is at the provider stays held until its result lands
        return len(dropped)

    async def drop_batch(self, batch_id: str) -> list[str]:
        """Remove a batch's queued (not yet sent) requests and cancel Message Batches holding only its (or
        other dropped batches') comparisons; return the correlation ids of those that were queued."""
        self._dropped.add(batch_id)
        queue = self._queues.pop(batch_id, deque())
        for req in queue:
            self._known.discard(req.correlation_id)
        return [req.correlation_id for req in queue]

    async def drain(self, timeout_s: float) -> dict[str, int]:
        """Graceful shutdown (`down`): take nothing new, drop what is queued (those rows keep no result
        and the next `up` re-sends them), let calls at the provider land and their results be
        acknowledged, for at most `timeout_s`."""
        self._draining = True
        queued = [r.correlation_id for q in self._queues.values() for r in q]
        self._queues.clear()
        # Only what was queued leaves the lease: what is at the provider stays held until its result lands (a
        # sweep during `down` must not expire it), and an open Message Batch stays in PostgreSQL for `up`.
        self._known.difference_update(queued)
        dropped = len(queued)

        async def quiet() -> None:
            while self._in_call or not self._sender.idle():
                self._progress.clear()
                await self._progress.wait()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(quiet(), timeout_s)
        return {"dropped": dropped, "in_call": self._in_call, "undelivered": self._sender.pending()}

    def _settled(self, correlation_ids: list[str]) -> None:
        self._known.difference_update(correlation_ids)
        if self._message_batches is not None:
            self._message_batches.settled(correlation_ids)
        self._progress.set()

    async def stats(self) -> dict[str, int]:
        return {
            "index": self.index,
            "queued": sum(len(q) for q in self._queues.values()),
            "batches_queued": len(self._queues),
            "calls": self._calls,
            "slots": self._slots.size,
            "delivered": self._sender.delivered,
            **(self._message_batches.stats() if self._message_batches is not None else {}),
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

    def _take(self, n: int, max_chars: int | None = None) -> list[ComparisonRequest]:
        """Up to n requests (and about `max_chars` of text), round-robin across batches, all for one model
        (one limiter key, one call)."""
        reqs: list[ComparisonRequest] = []
        chars = 0
        while len(reqs) < n:
            req = self._next()
            if req is None:
                break
            size = len(req.text_a) + len(req.text_b) + len(req.instructions)
            if reqs and (req.model != reqs[0].model or (max_chars is not None and chars + size > max_chars)):
                self._queues.setdefault(req.batch_id, deque()).appendleft(req)
                break
            reqs.append(req)
            chars += size
        return reqs

    async def _pump(self) -> None:
        """Messages mode: one call per comparison, each in a slot, after a grant of the pool's limiter."""
        while True:
            if not self._queues:
                self._work.clear()
                await self._work.wait()
                continue
            await self._slots.acquire()
            await self._asking.acquire()
            # A group of requests shares one permit request to the limiter (a Ray round trip on each side per
            # comparison was a third of the limiter's and a seventh of the worker's CPU), as many as free slots
            # and the asks allowed at the limiter (`acquire_depth` requests per worker, so a new batch waits
            # behind no more than before) permit without waiting, at most PERMIT_GROUP.
            extra = 0
            queued = self._queued(PERMIT_GROUP)
            while (extra < PERMIT_GROUP - 1 and extra + 1 < queued and not self._asking.locked()
                   and self._slots.try_acquire()):
                await self._asking.acquire()  # free: does not wait
                extra += 1
            reqs = self._take(1 + extra) if not self._draining else []
            for _ in range(extra + 1 - len(reqs)):
                self._slots.release()  # fewer requests than the slots and asks taken for them
                self._asking.release()
            if not reqs:
                if self._draining:
                    self._work.clear()
                    await self._work.wait()
                continue
            # From here until its result is handed to the sender a request counts as in call (what `drain`
            # waits for). The grant is awaited in the call's own task: a pump waiting for each grant's
            # round trip to the limiter served ~8 requests/s per worker under load, whatever the rate limit.
            # Only `acquire_depth` requests wait at the limiter at once; the rest wait here, round-robin.
            self._in_call += len(reqs)
            asyncio.get_running_loop().create_task(self._acquire_and_call(reqs))

    async def _pump_message_batches(self) -> None:
        """Message Batches mode: what every batch has queued, gathered for `batch_window_s`, goes out as one
        Message Batch (up to `batch_max_requests`, ~200 MB, and this worker's share of the provider's queue).
        A slot is held only while the create is made."""
        assert self._message_batches is not None
        s = self._settings
        while True:
            if not self._queues or self._draining:
                self._work.clear()
                await self._work.wait()
                continue
            await self._slots.acquire()
            if s.batch_window_s:
                await asyncio.sleep(s.batch_window_s)  # let this tick's requests join the same Message Batch
            room = self._message_batches.room()
            reqs = self._take(min(s.batch_max_requests, room), MESSAGE_BATCH_MAX_CHARS) \
                if room > 0 and not self._draining else []
            if not reqs:
                self._slots.release()
                if room <= 0:  # the provider's queue is full: wait for a Message Batch to be read
                    self._progress.clear()
                    await self._progress.wait()
                continue
            self._in_call += len(reqs)
            asyncio.get_running_loop().create_task(self._create_message_batch(reqs))

    async def _create_message_batch(self, reqs: list[ComparisonRequest]) -> None:
        assert self._message_batches is not None
        try:
            self._calls += 1
            while not await self._message_batches.submit(reqs):  # that size is awaiting another create's answer
                if len(reqs) > 1:
                    back = reqs.pop()
                    self._queues.setdefault(back.batch_id, deque()).appendleft(back)
                    self._call_ended(1)
                    self._work.set()
                else:
                    await asyncio.sleep(0.1)
        except Exception as exc:  # anything unexpected is a typed error result: a lease is never held
            log.exception("message batch create failed unexpectedly (%s)", type(exc).__name__)
            self._deliver_message_batch(reqs[0].model, [self._provider_call.unexpected(r, exc) for r in reqs])
        finally:
            self._slots.release()
            self._call_ended(len(reqs))

    async def _acquire_and_call(self, reqs: list[ComparisonRequest]) -> None:
        # The pool's one limiter: granted in arrival order across every worker, one grant per comparison.
        key = f"{self._key_id}:{reqs[0].model}"
        try:
            try:
                grants, waited = await self._limiter.acquire.remote(key, [self._estimate(r) for r in reqs])
            finally:
                for _ in reqs:
                    self._asking.release()
        except RayError as exc:  # the limiter is restarting: put the requests back and try again
            log.warning("rate limiter unavailable (%s); retrying", type(exc).__name__)
            await asyncio.sleep(backoff_s(1, 0.75, 0.75, random.uniform(0.5, 1.0)))  # jittered: every worker lost it
            for req in reversed(reqs):
                self._queues.setdefault(req.batch_id, deque()).appendleft(req)
            self._release(len(reqs))
            self._work.set()
            return
        if self._draining:  # shutting down while they waited for permits: leave them for `up`
            self._known.difference_update(r.correlation_id for r in reqs)
            self._release(len(reqs))
            return
        metrics.observe("cj_rate_limit_wait_seconds", waited)
        await asyncio.gather(*(self._call(r, key, g) for r, g in zip(reqs, grants, strict=True)))

    def _record_metrics(self, model: str, result: ComparisonResult) -> None:
        who = {"provider": self._provider, "model": model}
        metrics.inc("llm_provider_requests_total", 1.0, **who,
                    outcome="ok" if result.error_type is None else result.error_type.value)
        metrics.observe("llm_provider_latency_seconds", result.latency_ms / 1000.0, **who)
        if result.error_type is not None:
            metrics.inc("llm_provider_api_errors_total", provider=self._provider, error_type=result.error_type.value,
                        http_status_code=str(result.http_status or 0))
        for kind, n in (("input", result.input_tokens), ("output", result.output_tokens),
                        ("cache_read", result.cache_read_tokens), ("cache_write", result.cache_write_tokens)):
            if n:
                metrics.inc("llm_provider_tokens_total", n, **who, kind=kind)
        if result.cost_usd:
            metrics.inc("llm_provider_cost_usd_total", result.cost_usd, **who)

    def _release(self, n: int) -> None:
        """`n` requests leave without a call: their slots are free again."""
        for _ in range(n):
            self._slots.release()
        self._call_ended(n)

    def _queued(self, enough: int) -> int:
        """Requests queued, counted only up to `enough` (the pump asks per permit; a full count was O(batches))."""
        n = 0
        for queue in self._queues.values():
            n += len(queue)
            if n >= enough:
                break
        return n

    def _call_ended(self, n: int) -> None:
        self._in_call -= n
        self._progress.set()

    async def _call(self, req: ComparisonRequest, key: str, grant: Any) -> None:
        # In call until its result is with the sender: `drain` must not see quiet before that.
        try:
            try:
                self._calls += 1
                try:
                    outcome = await self._compare(self._client, req, self._settings.price_for(req.model))
                except Exception as exc:  # anything unexpected is a typed error result: a lease is never held
                    log.exception("provider call failed unexpectedly (%s)", type(exc).__name__)
                    outcome = self._provider_call.unexpected(req, exc)
            finally:
                self._slots.release()
            self._report(key, [(grant, outcome.headers, *self._usage(grant, outcome))])
            self._settle(req.model, outcome)
        finally:
            self._call_ended(1)

    def _batch_api(self) -> Any:
        """The Message Batches API's calls through the pool's limiter, in a bucket of the Batches API's own limits:
        they are not comparisons."""
        key = f"{self._key_id}{BATCHES_API}"

        async def permit() -> Any:
            grants, _ = await self._limiter.acquire.remote(key, [0])
            return grants[0]

        async def answered(grant: Any) -> None:
            with contextlib.suppress(RayError):
                await self._limiter.report.remote(key, [(grant, {}, (0, 0), None, False)])

        async def refused(grant: Any, headers: dict[str, str], retry_after_s: float | None, overloaded: bool) -> None:
            with contextlib.suppress(RayError):
                await self._limiter.report.remote(key, [(grant, headers, None, retry_after_s, overloaded)])

        return self._provider_call.BatchApi(permit, answered, refused)

    def _deliver_message_batch(self, model: str, outcomes: list[Any]) -> None:
        for outcome in outcomes:
            self._settle(model, outcome)

    @staticmethod
    def _usage(grant: Any, outcome: Any) -> tuple[tuple[int, int] | None, float | None, bool]:
        """What a call used of the allowance (None: refused, it used none), any retry-after, and whether it was a
        529 (the limiter pauses the pool for those only while they go on)."""
        result = outcome.result
        status = result.http_status
        if status == 429:
            usage = None
        elif result.error_type is None or status == 200:
            usage = (result.input_tokens + result.cache_write_tokens, result.output_tokens)
        else:  # admitted, then failed: the estimate stays charged
            usage = (getattr(grant, "input_tokens", 0), 0)
        return usage, result.retry_after_s if status in (429, 529) else None, status == 529

    def _report(self, key: str, items: list[Any]) -> None:
        """Reports to the limiter go in one call per key every REPORT_EVERY_S, not one per comparison."""
        self._reports.setdefault(key, []).extend(items)
        if not self._reporting:
            self._reporting = True
            asyncio.get_running_loop().call_later(REPORT_EVERY_S, self._flush_reports)

    def _flush_reports(self) -> None:
        self._reporting = False
        reports, self._reports = self._reports, {}

        async def send(key: str, items: list[Any]) -> None:
            try:
                await self._limiter.report.remote(key, items)
            except RayError as exc:  # a restarting limiter relearns from the next response's headers
                log.warning("rate limiter unavailable for a report (%s)", type(exc).__name__)

        for key, items in reports.items():
            asyncio.get_running_loop().create_task(send(key, items))

    def _settle(self, model: str, outcome: Any) -> None:
        result = outcome.result
        self._record_metrics(model, result)
        if result.http_status == 200 or result.error_type is None:
            self._latencies.append(result.latency_ms / 1000.0)
            self._answered += 1
            # Resized at the 4th and 8th answers, then every 16th: at 3 s latencies the first 16 took ~3 s,
            # all that time at the floor's 16 calls per worker (~11/s for the pool of two, against 67/s).
            if self._adaptive and (self._answered % 16 == 0 or self._answered in (4, 8)):
                s = self._settings
                self._slots.resize(calls_in_flight(s.requests_per_minute, self._latencies, s.workers, MIN_SLOTS))
        if result.error_type is not None:
            # One structured line per failure: ids, status and limits; never the key or essay text.
            log.warning("provider error %s", json.dumps({
                "event": "provider_error", "batch_id": result.batch_id, "correlation_id": result.correlation_id,
                "error_type": result.error_type.value, "http_status": result.http_status, "model": model,
                "request_id": result.provider_request_id, "ratelimit": outcome.headers,
            }), extra={"batch_id": result.batch_id, "correlation_id": result.correlation_id})
        self._sender.add(result)
