"""The transactional outbox's delivery side: due events, published, failed with a next attempt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update

from storage.records import (
    Store,
)
from storage.schema import (
    outbox,
)


class OutboxStore(Store):
    """What the outbox publisher reads and marks."""

    async def due_events(self, limit: int) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(outbox.c.id, outbox.c.aggregate_id, outbox.c.event_type, outbox.c.payload,
                           outbox.c.created_at, outbox.c.attempts)
                    .where(outbox.c.published_at.is_(None),
                           (outbox.c.next_attempt_at.is_(None)) | (outbox.c.next_attempt_at <= func.now()))
                    .order_by(outbox.c.created_at)
                    .limit(limit)
                )
            ).mappings().all()
        return [dict(r) for r in rows]

    async def mark_published(self, event_ids: Sequence[str]) -> None:
        if not event_ids:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                update(outbox)
                .where(outbox.c.id.in_(list(event_ids)), outbox.c.published_at.is_(None))
                .values(published_at=func.now(), attempts=outbox.c.attempts + 1, last_error=None)
            )

    async def mark_delivery_failed(self, event_id: str, error: str, retry_in_s: float) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(outbox)
                .where(outbox.c.id == event_id)
                .values(attempts=outbox.c.attempts + 1, last_error=error[:500],
                        next_attempt_at=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, retry_in_s))
            )
