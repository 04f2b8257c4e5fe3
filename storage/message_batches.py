"""Message Batches as rows (invariant 13): written before the create is sent, given the provider's id as soon
as the create answers, closed once read. What a restarted worker resumes, what the Supervisor must not expire,
and what `status` shows a batch waiting on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from storage.records import Store
from storage.schema import OPEN_MESSAGE_BATCH, message_batches, pairs


@dataclass(frozen=True, slots=True)
class OpenMessageBatch:
    id: str
    provider_batch_id: str | None  # None: the create was sent and its answer not yet seen
    model: str
    items: list[tuple[str, str]]  # (correlation id, batch id) of each comparison in it
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Waiting:
    """A Message Batch a batch is waiting on (`status`)."""

    provider_batch_id: str | None
    state: str
    items: int
    created_at: datetime
    polled_at: datetime | None


class MessageBatchStore(Store):
    async def open(self, mb_id: str, namespace: str, worker: int, model: str, correlation_ids: list[str]) -> bool:
        """The row, before the create is sent; each comparison row names it (one transaction). False, with
        nothing written, when another create of the same size is still awaiting its answer: sizes tell lost
        creates apart in the API's list."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(message_batches).values(
                    id=mb_id, ray_namespace=namespace, worker=worker, model=model, state="creating",
                    items=len(correlation_ids)))
                await conn.execute(update(pairs).where(pairs.c.correlation_id.in_(correlation_ids))
                                   .values(message_batch=mb_id))
        except IntegrityError:
            return False
        return True

    async def created(self, mb_id: str, provider_batch_id: str, provider_created_at: datetime | None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(message_batches).where(message_batches.c.id == mb_id).values(
                provider_batch_id=provider_batch_id, provider_created_at=provider_created_at, state="pending"))

    async def polled(self, mb_id: str) -> None:
        """A poll answered: the batches inside are waiting, not stuck (CJBatchStuck)."""
        async with self.engine.begin() as conn:
            await conn.execute(update(message_batches).where(message_batches.c.id == mb_id)
                               .values(polled_at=func.now()))

    async def close(self, mb_id: str, state: str) -> None:
        """`read` (every result handed over and acknowledged), `cancelled` or `failed` (never created)."""
        async with self.engine.begin() as conn:
            await conn.execute(update(message_batches).where(message_batches.c.id == mb_id,
                                                             message_batches.c.state.in_(OPEN_MESSAGE_BATCH))
                               .values(state=state, closed_at=func.now()))

    async def recorded(self, provider_batch_ids: list[str]) -> set[str]:
        """Which of these provider ids are already ours (a lost create's batch is one that is not)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(message_batches.c.provider_batch_id)
                                       .where(message_batches.c.provider_batch_id.in_(provider_batch_ids)))).all()
        return {r[0] for r in rows}

    async def open_for_worker(self, namespace: str, worker: int, workers: int) -> list[OpenMessageBatch]:
        """The open Message Batches a (re)started worker takes over: its own, and those of worker indexes the
        deployment no longer has (`CJ_WORKERS` lowered between `down` and `up`)."""
        mb = message_batches
        async with self.engine.begin() as conn:
            await conn.execute(update(mb).where(mb.c.ray_namespace == namespace, mb.c.state.in_(OPEN_MESSAGE_BATCH),
                                                mb.c.worker >= workers, mb.c.worker % workers == worker)
                               .values(worker=worker))
            rows = (await conn.execute(select(mb.c.id, mb.c.provider_batch_id, mb.c.model, mb.c.created_at)
                                       .where(mb.c.ray_namespace == namespace, mb.c.worker == worker,
                                              mb.c.state.in_(OPEN_MESSAGE_BATCH)).order_by(mb.c.created_at))).all()
            items = (await conn.execute(select(pairs.c.message_batch, pairs.c.correlation_id, pairs.c.batch_id)
                                        .where(pairs.c.message_batch.in_([r.id for r in rows]))
                                        .order_by(pairs.c.id))).all() if rows else []
        by_mb: dict[str, list[tuple[str, str]]] = {}
        for mb_id, cid, bid in items:
            by_mb.setdefault(mb_id, []).append((cid, bid))
        return [OpenMessageBatch(r.id, r.provider_batch_id, r.model, by_mb.get(r.id, []), r.created_at)
                for r in rows]

    async def waiting_for(self, batch_id: str) -> list[Waiting]:
        """The open Message Batches holding comparisons of this batch, oldest first."""
        mb = message_batches
        mine = select(pairs.c.message_batch).where(pairs.c.batch_id == batch_id, pairs.c.winner.is_(None),
                                                   pairs.c.message_batch.is_not(None)).distinct()
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(mb.c.provider_batch_id, mb.c.state, mb.c["items"], mb.c.created_at,
                                              mb.c.polled_at)
                                       .where(mb.c.id.in_(mine), mb.c.state.in_(OPEN_MESSAGE_BATCH))
                                       .order_by(mb.c.created_at))).all()
        return [Waiting(*r) for r in rows]
