"""A provider worker's Message Batches (CJ_PROVIDER_MODE=batches), from create to results, recorded in
PostgreSQL at every step (invariant 13).

- The row is written before the create is sent; the provider's id the moment the create answers.
- A create without an answer (a lost connection, a timeout, a 5xx) is looked for in the API's list before
  it is sent again (cjcore.message_batch.lost_create): adopted if found, never bought twice.
- A pending Message Batch holds no slot: one small task polls it, with backoff, for as long as it takes; a
  failed poll is polled again, never re-bought. Creates and polls are charged to the Batches API's own limits.
- Its results go to the coordinator hosts like any others; once all are acknowledged the row is `read`.
- A restarted worker (a kill, or `down` then `up`) resumes every open row it owns from the database.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from actors import provider_call as pc
from cjcore.contracts import ComparisonRequest, ComparisonResult, ErrorType
from cjcore.message_batch import CLOCK_SKEW_S, lost_create
from cjcore.retrying import retrying
from cjcore.settings import Settings
from storage.message_batches import MessageBatchStore

log = logging.getLogger(__name__)

UNEXPECTED_LIMIT = 5  # unexpected exceptions in a row while waiting on one Message Batch before it is given up


@dataclass
class _Open:
    id: str
    model: str
    items: list[tuple[str, str]]  # (correlation id, batch id)
    provider_id: str | None = None
    created_at: float = field(default_factory=time.time)
    unacked: set[str] = field(default_factory=set)
    cancelled: bool = False
    failed: bool = False  # given up: its comparisons have error results


class MessageBatches:
    def __init__(self, index: int, settings: Settings, client: Any, store: MessageBatchStore, api: pc.BatchApi,
                 deliver: Callable[[str, list[pc.ProviderOutcome]], None], dropped: Container[str]):
        self._index = index
        self._s = settings
        self._client = client
        self._store = store
        self._api = api
        self._deliver = deliver  # (model, outcomes): to the result sender
        self._dropped = dropped  # batches cancelled or given up: a Message Batch of only theirs is cancelled
        self._open: dict[str, _Open] = {}
        self._of: dict[str, str] = {}  # correlation id → open Message Batch, until its result is acknowledged
        self._tasks: set[asyncio.Task[None]] = set()
        self.capacity = max(1, settings.batch_queue_max_requests // settings.workers)
        self._poll_max_s = settings.batch_poll_max_s or 30.0  # resolved by Settings
        self.created = self.adopted = 0

    # -- what the worker asks --------------------------------------------------------------------------

    def pending_items(self) -> int:
        return sum(len(m.items) for m in self._open.values())

    def room(self) -> int:
        """Requests this worker may still have at the provider (its share of the Batches API's queue limit)."""
        return self.capacity - self.pending_items()

    def settled(self, correlation_ids: list[str]) -> None:
        """The hosts acknowledged (or gave up on) these results; a Message Batch whose results are all
        acknowledged is closed."""
        for cid in correlation_ids:
            mb_id = self._of.pop(cid, None)
            mb = self._open.get(mb_id) if mb_id else None
            if mb is None:
                continue
            mb.unacked.discard(cid)
            if not mb.unacked:
                self._spawn(self._close(mb, "failed" if mb.failed else "cancelled" if mb.cancelled else "read"))

    def stats(self) -> dict[str, int]:
        return {"message_batches_open": len(self._open), "message_batch_items": self.pending_items(),
                "message_batches_created": self.created, "message_batches_adopted": self.adopted}

    # -- creating ---------------------------------------------------------------------------------------

    async def submit(self, reqs: list[ComparisonRequest]) -> bool:
        """Record, create (or adopt a lost create), then wait in the background. Returns once the provider's
        id is recorded, or the requests have error results; False, with nothing done, when another create of
        this size is awaiting its answer (the caller sends one request fewer)."""
        mb = _Open(uuid.uuid4().hex, reqs[0].model, [(r.correlation_id, r.batch_id) for r in reqs])
        if not await self._store.open(mb.id, self._s.ray_namespace, self._index, mb.model, [c for c, _ in mb.items]):
            return False
        self._track(mb)
        try:
            await self._create(mb, reqs)
        except pc.GaveUp as exc:
            log.warning("message batch %s: create failed (%s); its %d comparisons get error results", mb.id,
                        exc.details, len(mb.items))
            self._give_up(mb, exc.kind, f"message batch create: {exc.details}", exc.ids)
            return True
        self._spawn(self._wait(mb))
        return True

    async def _create(self, mb: _Open, reqs: list[ComparisonRequest]) -> None:
        sent_at = time.time()
        lost = False

        def again(exc: Exception) -> bool | float:
            if isinstance(exc, pc.Transient) and exc.retry_after is not None:
                return exc.retry_after
            return isinstance(exc, pc.Transient | pc.Lost)

        async for attempt in retrying(again, within_s=self._s.provider_outage_s, first_s=0.5,
                                      max_s=self._poll_max_s):
            with attempt:
                if lost and await self._adopt(mb, sent_at):
                    return
                try:
                    provider_id, created_at = await pc.create_message_batch(self._client, reqs, self._api)
                except pc.Lost:
                    lost = True
                    log.warning("message batch %s: the create got no answer; looking for it before sending again",
                                mb.id)
                    raise
                await _until_written(functools.partial(self._store.created, mb.id, provider_id,
                                                       _datetime(created_at)))
                mb.provider_id = provider_id
                self.created += 1

    async def _adopt(self, mb: _Open, sent_at: float) -> bool:
        """Look for a lost create in the API's list; adopt it if found."""
        listed = await pc.recent_message_batches(self._client, sent_at - CLOCK_SKEW_S, self._api,
                                                 outage_s=self._s.provider_outage_s,
                                                 max_delay_s=self._poll_max_s)
        ours = await self._store.recorded([b.id for b in listed]) if listed else set()
        found = lost_create(listed, len(mb.items), sent_at, ours)
        if found is None:
            return False
        await _until_written(lambda: self._store.created(mb.id, found.id, _datetime(found.created_at)))
        mb.provider_id = found.id
        self.adopted += 1
        log.warning("message batch %s: adopted %s, the create whose answer was lost", mb.id, found.id)
        return True

    # -- waiting and reading ------------------------------------------------------------------------------

    async def _wait(self, mb: _Open) -> None:
        """Poll until it ends (cancelling it once every batch inside was dropped), then read its results."""
        assert mb.provider_id is not None
        delay = self._s.batch_poll_s or 0.05
        unexpected = 0
        while True:
            try:
                await asyncio.sleep(delay)
                delay = min(self._poll_max_s, delay * 1.5)
                cancel = not mb.cancelled and all(b in self._dropped for _, b in mb.items)
                status = await pc.poll_message_batch(self._client, mb.provider_id, self._api, cancel=cancel,
                                                     outage_s=None, max_delay_s=self._poll_max_s)
                mb.cancelled |= cancel
                try:
                    await self._store.polled(mb.id)
                except Exception as exc:  # only for CJBatchStuck: a database away must not end the wait
                    log.warning("message batch %s: poll time not recorded (%s)", mb.id, type(exc).__name__)
                if status != "ended":
                    continue
                latency = int((time.time() - mb.created_at) * 1000)
                outcomes = await pc.message_batch_outcomes(
                    self._client, mb.provider_id, mb.items, self._s.price_for(mb.model), self._api,
                    latency_ms=latency, outage_s=None, max_delay_s=self._poll_max_s)
            except pc.GaveUp as exc:  # refused for good (404: gone, 401): what it held is tried again elsewhere
                log.warning("message batch %s (%s): %s; its comparisons get error results", mb.id, mb.provider_id,
                            exc.details)
                self._give_up(mb, exc.kind, f"message batch: {exc.details}", exc.ids)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or a truncated answer: tried again a few times, never for ever
                unexpected += 1
                log.exception("message batch %s: unexpected %s (%d of %d)", mb.id, type(exc).__name__, unexpected,
                              UNEXPECTED_LIMIT)
                if unexpected >= UNEXPECTED_LIMIT:
                    self._give_up(mb, ErrorType.UNEXPECTED, f"message batch: unexpected {type(exc).__name__}", {})
                    return
                continue
            self._deliver(mb.model, outcomes)
            return

    def _give_up(self, mb: _Open, kind: ErrorType, details: str, ids: dict[str, Any]) -> None:
        """Error results for every comparison in it (the coordinators retry them as new attempts); the row is
        closed `failed` once they are acknowledged."""
        outcomes = [pc.ProviderOutcome(ComparisonResult.error(item, kind, details, **ids)) for item in mb.items]
        mb.failed = True
        self._deliver(mb.model, outcomes)

    async def _close(self, mb: _Open, state: str) -> None:
        await _until_written(lambda: self._store.close(mb.id, state))
        self._open.pop(mb.id, None)

    # -- bookkeeping --------------------------------------------------------------------------------------

    def _track(self, mb: _Open) -> None:
        self._open[mb.id] = mb
        mb.unacked = {c for c, _ in mb.items}
        for cid, _ in mb.items:
            self._of[cid] = mb.id

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resume(self) -> list[str]:
        """A (re)started worker takes its open Message Batches back from the database: each one with an id is
        waited on; each whose create got no answer is looked for and adopted, or, if the provider never took
        it, its comparisons get error results (nothing was bought). Returns the correlation ids now held."""
        rows = await self._store.open_for_worker(self._s.ray_namespace, self._index, self._s.workers)
        for row in rows:
            mb = _Open(row.id, row.model, row.items, row.provider_batch_id, row.created_at.timestamp())
            if not mb.items:  # its comparison rows are gone (the batch deleted): nothing to wait for
                await self._store.close(mb.id, "failed")
                continue
            self._track(mb)
            self._spawn(self._resume_one(mb))
        if rows:
            log.warning("resumed %d open Message Batches (%d comparisons)", len(rows), self.pending_items())
        return list(self._of)

    async def _resume_one(self, mb: _Open) -> None:
        if mb.provider_id is None:
            try:
                found = await self._adopt(mb, mb.created_at)
            except pc.GaveUp as exc:
                found = False
                log.warning("message batch %s: could not list Message Batches (%s)", mb.id, exc.details)
            if not found:
                self._give_up(mb, ErrorType.CONNECTION, "message batch create never answered", {})
                return
        await self._wait(mb)



async def _until_written(write: Callable[[], Awaitable[None]]) -> None:
    """A write that must land (a Message Batch bought and not recorded would be bought again): retried for as long
    as the database is away."""
    async for attempt in retrying(lambda exc: True, within_s=None, first_s=1.0, max_s=30.0):
        with attempt:
            await write()


def _datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
