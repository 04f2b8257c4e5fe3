"""The admission queue's queries: batches accepted QUEUED, how many are live, admitting one.

A deployment (Ray namespace) admits only the batches submitted to it, so several deployments may share
one database (the tests do).
"""

from __future__ import annotations

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cjcore.admission import Queued
from cjcore.contracts import BatchState
from storage.records import Store
from storage.schema import IN_PROGRESS, batch_states, batches, of_deployment


class BatchQueue(Store):
    def __init__(self, engine: AsyncEngine, namespace: str, outage_s: float = 60.0):
        super().__init__(engine, outage_s)
        self.namespace = namespace

    async def queued(self) -> list[Queued]:
        """Every QUEUED batch of this deployment, with what admission orders them by."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(batch_states.c.batch_id, batch_states.c.total_budget,
                       batch_states.c.metadata["n_essays"].as_integer(),
                       func.extract("epoch", func.now() - batches.c.created_at))
                .join(batches, batches.c.batch_id == batch_states.c.batch_id)
                .where(batch_states.c.state == BatchState.QUEUED, of_deployment(self.namespace))
            )).all()
        return [Queued(r[0], r[1], r[2] or 0, float(r[3])) for r in rows]

    async def live(self) -> int:
        """Batches admitted and not yet terminal (each has, or is about to have, a coordinator)."""
        async with self.engine.connect() as conn:
            return int((await conn.execute(
                select(func.count()).select_from(batch_states)
                .join(batches, batches.c.batch_id == batch_states.c.batch_id)
                .where(batch_states.c.state.in_(IN_PROGRESS), of_deployment(self.namespace))
            )).scalar_one())

    async def backlog(self, pairs_per_essay: float) -> int:
        """Comparisons the deployment's batches in progress have waiting for the provider: each batch's
        outstanding attempts, and between rounds what its next round will ask for (a round's tail may still be
        out then: CJ_ROUND_TAIL_PCT)."""
        outstanding = (batch_states.c.submitted_comparisons - batch_states.c.completed_comparisons
                       - batch_states.c.failed_comparisons)
        between = batch_states.c.state.in_([BatchState.INITIALIZING, BatchState.GENERATING_PAIRS, BatchState.SCORING])
        next_round = func.least(
            batch_states.c.total_budget - batch_states.c.submitted_comparisons,
            func.ceil(func.coalesce(batch_states.c.metadata["n_essays"].as_integer(), 0) * pairs_per_essay))
        async with self.engine.connect() as conn:
            return int((await conn.execute(
                select(func.coalesce(func.sum(outstanding + case((between, next_round), else_=0)), 0))
                .select_from(batch_states).join(batches, batches.c.batch_id == batch_states.c.batch_id)
                .where(batch_states.c.state.in_(IN_PROGRESS), of_deployment(self.namespace))
            )).scalar_one())

    async def admit(self, batch_id: str) -> bool:
        """QUEUED → INITIALIZING; True also when it is INITIALIZING already (this call repeated after a lost
        reply: the caller makes sure of its coordinator, which is idempotent); False if cancelled."""
        async with self.engine.begin() as conn:
            moved = (await conn.execute(
                update(batch_states)
                .where(batch_states.c.batch_id == batch_id, batch_states.c.state == BatchState.QUEUED)
                .values(state=BatchState.INITIALIZING, last_activity_at=func.now())
            )).rowcount == 1
            if moved:
                await conn.execute(update(batches).where(batches.c.batch_id == batch_id)
                                   .values(admitted_at=func.now()))
                return True
            # Admitted by an earlier try of this call whose reply was lost: the same answer.
            return (await conn.execute(select(batch_states.c.state).where(
                batch_states.c.batch_id == batch_id))).scalar_one_or_none() == BatchState.INITIALIZING
