"""Read models: a batch's result (DESIGN §4.2), its state, health, inspection, attempts and events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from cjcore.batch_metadata import BatchMetadata
from cjcore.completion import completion_pct
from cjcore.contracts import (
    BatchResult,
    BatchState,
    BudgetSource,
    CompletionOut,
    CostOut,
    Counters,
    CountersOut,
    GradeProjectionOut,
    PositionOut,
    RankingEntry,
    ReliabilityOut,
    denominator,
)
from cjcore.errors import BatchNotFound
from storage.records import (
    COUNTER_COLS,
    Store,
    counters_dict,
    counters_of,
)
from storage.schema import (
    batch_states,
    batches,
    essays,
    outbox,
    pairs,
    projections,
)


class ReadModels(Store):
    """What clients and operators read; nothing here writes."""

    async def state_of(self, batch_id: str) -> tuple[BatchState, Counters]:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(batch_states.c.state, *COUNTER_COLS).where(batch_states.c.batch_id == batch_id)
                )
            ).one_or_none()
        if row is None:
            raise BatchNotFound(f"batch {batch_id!r} not found", correlation_id=batch_id)
        return BatchState(row.state), counters_of(row)

    async def result(self, batch_id: str) -> BatchResult:
        async with self.engine.connect() as conn:
            head = (
                await conn.execute(
                    select(
                        batch_states.c.state, batch_states.c.completion_reason, batch_states.c.metadata,
                        batch_states.c.completion_threshold_pct, batches.c.budget_source, batches.c.anchor_set_id,
                        *COUNTER_COLS,
                    )
                    .join(batches, batches.c.batch_id == batch_states.c.batch_id)
                    .where(batch_states.c.batch_id == batch_id)
                )
            ).one_or_none()
            if head is None:
                raise BatchNotFound(f"batch {batch_id!r} not found", correlation_id=batch_id)
            essay_rows = (
                await conn.execute(
                    select(essays.c.essay_id, essays.c.score, essays.c.se, essays.c.is_anchor,
                           essays.c.known_grade, essays.c.rank, essays.c.infit, essays.c.outfit, essays.c.misfit)
                    .where(essays.c.batch_id == batch_id, essays.c.score.is_not(None))
                    .order_by(essays.c.score.desc(), essays.c.essay_id)
                )
            ).all()
            proj_rows = (
                await conn.execute(
                    select(projections.c.essay_id, projections.c.grade, projections.c.probabilities,
                           projections.c.confidence)
                    .where(projections.c.batch_id == batch_id)
                    .order_by(projections.c.essay_id)
                )
            ).all()
            cost = await self._cost(conn, batch_id)
            n_essays = (
                await conn.execute(select(func.count()).select_from(essays).where(essays.c.batch_id == batch_id))
            ).scalar_one()
        counters = counters_of(head)
        meta = BatchMetadata.read(head.metadata)
        held = set(meta.held)

        def mean_square(v: float | None) -> float | None:
            return None if v is None else round(v, 3)

        return BatchResult(
            batch_id=batch_id,
            state=BatchState(head.state),
            completion_reason=head.completion_reason,
            counters=CountersOut(**counters_dict(counters)),
            rankings=[
                RankingEntry(essay_id=r.essay_id, rank=r.rank or i + 1, score=round(r.score, 4),
                             se=round(r.se or 0.0, 4), is_anchor=r.is_anchor, known_grade=r.known_grade,
                             infit=mean_square(r.infit), outfit=mean_square(r.outfit), misfit=bool(r.misfit),
                             held=r.essay_id in held)
                for i, r in enumerate(essay_rows)
            ],
            grade_projections=[
                GradeProjectionOut(essay_id=r.essay_id, grade=r.grade, probabilities=r.probabilities,
                                   confidence=r.confidence)
                for r in proj_rows
            ],
            reliability=meta.reliability or ReliabilityOut(ssr=0.0),
            position=meta.position or PositionOut(),
            cost=cost,
            completion=CompletionOut(
                denominator=denominator(counters.total_budget, n_essays, len(held)),
                threshold_pct=head.completion_threshold_pct,
                completion_pct=round(completion_pct(counters, n_essays, len(held)), 2),
                stability_threshold=meta.completion.stability_threshold if meta.completion else None,
                last_max_change=meta.completion.last_max_change if meta.completion else None,
            ),
            budget_source=BudgetSource(head.budget_source),
            anchor_set_id=head.anchor_set_id,
            judges=meta.judges,
            error=meta.error,
        )

    async def _cost(self, conn: AsyncConnection, batch_id: str) -> CostOut:
        row = (
            await conn.execute(
                select(
                    func.coalesce(func.sum(pairs.c.input_tokens), 0).label("i"),
                    func.coalesce(func.sum(pairs.c.output_tokens), 0).label("o"),
                    func.coalesce(func.sum(pairs.c.cache_read_tokens), 0).label("cr"),
                    func.coalesce(func.sum(pairs.c.cache_write_tokens), 0).label("cw"),
                    func.coalesce(func.sum(pairs.c.cost_usd), 0.0).label("usd"),
                ).where(pairs.c.batch_id == batch_id)
            )
        ).one()
        return CostOut(input_tokens=row.i, output_tokens=row.o, cache_read_tokens=row.cr,
                       cache_write_tokens=row.cw, usd=round(float(row.usd), 6))

    async def health(self, batch_id: str | None = None, newest: int | None = None) -> list[dict[str, Any]]:
        """cj_batch_health rows, oldest first; `newest`: only that many, newest first (a page of a long history)."""
        # `host`: the coordinator host that last claimed the batch (cj-coordinators-<i>).
        sql = "SELECT h.*, s.owner_host AS host FROM cj_batch_health h JOIN cj_batch_states s USING (batch_id)"
        params: dict[str, Any] = {}
        if batch_id is not None:
            sql += " WHERE h.batch_id = :b"
            params["b"] = batch_id
        if newest is None:
            sql += " ORDER BY created_at"
        else:
            sql += " ORDER BY created_at DESC, batch_id DESC LIMIT :n"
            params["n"] = newest
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(sql), params)).mappings().all()
        return [dict(r) for r in rows]

    async def inspect(self, batch_id: str) -> dict[str, Any]:
        """The counters beside what the rows say (COUNT queries, never loading rows)."""
        _, counters = await self.state_of(batch_id)
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT count(*) AS submitted, "
                        "count(*) FILTER (WHERE winner IN ('essay_a','essay_b')) AS completed, "
                        "count(*) FILTER (WHERE winner = 'error') AS failed, "
                        "count(*) FILTER (WHERE winner IS NULL) AS in_flight, "
                        "count(*) FILTER (WHERE winner = 'essay_a') AS a_wins, "
                        "count(*) FILTER (WHERE winner = 'essay_b') AS b_wins "
                        "FROM cj_comparison_pairs WHERE batch_id = :b"
                    ),
                    {"b": batch_id},
                )
            ).one()
            errors = (
                await conn.execute(
                    text(
                        "SELECT error_code, count(*) FROM cj_comparison_pairs WHERE batch_id = :b "
                        "AND winner = 'error' GROUP BY error_code ORDER BY 2 DESC"
                    ),
                    {"b": batch_id},
                )
            ).all()
            events = (
                await conn.execute(
                    select(func.count()).select_from(outbox).where(outbox.c.aggregate_id == batch_id)
                )
            ).scalar_one()
            cost = await self._cost(conn, batch_id)
        database = dict(rows._mapping)
        return {
            "batch_id": batch_id,
            "counters": counters_dict(counters),
            "database": database,
            "consistent": (
                counters.submitted == database["submitted"]
                and counters.completed == database["completed"]
                and counters.failed == database["failed"]
            ),
            "errors_by_code": {code: n for code, n in errors},
            "outbox_events": events,
            "cost": cost.model_dump(),
        }

    async def attempts(self, batch_id: str) -> list[dict[str, Any]]:
        """Every comparison attempt of a batch in the order they were made: the decision record."""
        await self.state_of(batch_id)  # BatchNotFound for an unknown id
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(pairs.c.correlation_id, pairs.c.iteration, pairs.c.attempt, pairs.c.retry_of,
                       pairs.c.essay_a_id, pairs.c.essay_b_id, pairs.c.winner, pairs.c.confidence,
                       pairs.c.justification, pairs.c.error_code, pairs.c.error_details, pairs.c.http_status,
                       pairs.c.input_tokens, pairs.c.output_tokens, pairs.c.cache_read_tokens,
                       pairs.c.cache_write_tokens, pairs.c.cost_usd, pairs.c.latency_ms, pairs.c.provider_request_id,
                       pairs.c.created_at, pairs.c.completed_at)
                .where(pairs.c.batch_id == batch_id).order_by(pairs.c.id))).mappings().all()
        return [{**r, "winner": r["winner"].value if r["winner"] else None,
                 "created_at": r["created_at"].isoformat(),
                 "completed_at": r["completed_at"].isoformat() if r["completed_at"] else None} for r in rows]

    async def events(self, batch_id: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(outbox.c.id, outbox.c.event_type, outbox.c.payload, outbox.c.published_at)
                    .where(outbox.c.aggregate_id == batch_id)
                    .order_by(outbox.c.created_at)
                )
            ).mappings().all()
        return [dict(r) for r in rows]

    async def terminal_event(self, batch_id: str) -> dict[str, Any] | None:
        """The batch's completion/failure/cancellation event, once it exists."""
        events = await self.events(batch_id)
        return events[0] if events else None
