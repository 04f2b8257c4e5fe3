"""A batch's writes: creating and loading it, its rounds' rows out and results in, its state moves and its
terminal transaction. Counters move in the same statement or transaction as the rows they count, so
`cj_batch_states` always equals COUNTs over `cj_comparison_pairs` (invariant 1)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cjcore.batch_metadata import BatchMetadata
from cjcore.contracts import (
    TERMINAL_STATES,
    BatchRequest,
    BatchState,
    BudgetSource,
    Comparison,
    ComparisonResult,
    Counters,
    CountersOut,
    ErrorType,
    GradeProjectionOut,
    Winner,
)
from cjcore.errors import BatchExists, BatchNotFound, Fenced
from cjcore.retry import NOT_JUDGED, Attempt, Retry
from cjcore.state_machine import sources_of
from storage.records import (
    COUNTER_COLS,
    BatchSnapshot,
    EssayFit,
    EssayRow,
    NewBatch,
    Store,
    counters_dict,
    counters_of,
    meta_patch,
)
from storage.schema import (
    BatchStatus,
    batch_states,
    batches,
    essays,
    outbox,
    pairs,
    projections,
)

_INSERT_ROUND_SQL = text(
    """
INSERT INTO cj_comparison_pairs (correlation_id, batch_id, iteration, essay_a_id, essay_b_id)
SELECT cid, CAST(:batch_id AS text), CAST(:iteration AS int), a, b
  FROM unnest(CAST(:cid AS text[]), CAST(:a AS text[]), CAST(:b AS text[])) AS t(cid, a, b)
"""
)

_RECORD_SQL = text(
    """
WITH fence AS (
    -- The writer's epoch still holds the batch (NULL: an unfenced writer). Locked, so a claim that moves the
    -- epoch on waits for this statement or makes it record nothing.
    SELECT batch_id FROM cj_batch_states
     WHERE batch_id = :batch_id AND (CAST(:epoch AS bigint) IS NULL OR owner_epoch = CAST(:epoch AS bigint))
       FOR UPDATE
), incoming AS (
    SELECT * FROM unnest(
        CAST(:cid AS text[]), CAST(:winner AS text[]), CAST(:confidence AS float8[]),
        CAST(:justification AS text[]), CAST(:error_code AS text[]), CAST(:error_details AS text[]),
        CAST(:http_status AS int[]), CAST(:request_id AS text[]), CAST(:input_tokens AS int[]),
        CAST(:output_tokens AS int[]), CAST(:cache_read AS int[]), CAST(:cache_write AS int[]),
        CAST(:cost AS float8[]), CAST(:latency AS int[])
    ) AS t(correlation_id, winner, confidence, justification, error_code, error_details, http_status,
           provider_request_id, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
           cost_usd, latency_ms)
), same AS (
    -- Rows that already hold this very result (before this statement): a repeat of a delivery whose
    -- commit reply was lost, or a worker re-sending one it was not sure was acknowledged.
    SELECT p.correlation_id FROM cj_comparison_pairs p JOIN incoming i ON i.correlation_id = p.correlation_id
     WHERE p.batch_id = :batch_id AND p.winner = CAST(i.winner AS cj_winner)
       AND p.error_code IS NOT DISTINCT FROM i.error_code AND p.latency_ms IS NOT DISTINCT FROM i.latency_ms
       AND p.provider_request_id IS NOT DISTINCT FROM i.provider_request_id
), recorded AS (
    UPDATE cj_comparison_pairs p
       SET winner = CAST(i.winner AS cj_winner), confidence = i.confidence, justification = i.justification,
           error_code = i.error_code, error_details = i.error_details, http_status = i.http_status,
           provider_request_id = i.provider_request_id, input_tokens = i.input_tokens,
           output_tokens = i.output_tokens, cache_read_tokens = i.cache_read_tokens,
           cache_write_tokens = i.cache_write_tokens, cost_usd = i.cost_usd, latency_ms = i.latency_ms,
           completed_at = now()
      FROM incoming i
     WHERE p.correlation_id = i.correlation_id AND p.batch_id = :batch_id AND p.winner IS NULL
       AND EXISTS (SELECT 1 FROM fence)
    RETURNING p.correlation_id, p.winner
), tally AS (
    SELECT count(*) FILTER (WHERE winner <> 'error') AS ok, count(*) FILTER (WHERE winner = 'error') AS bad
      FROM recorded
), bump AS (
    UPDATE cj_batch_states s
       SET completed_comparisons = s.completed_comparisons + tally.ok,
           failed_comparisons = s.failed_comparisons + tally.bad,
           last_activity_at = CASE WHEN tally.ok + tally.bad > 0 THEN now() ELSE s.last_activity_at END
      FROM tally
     WHERE s.batch_id IN (SELECT batch_id FROM fence)
    RETURNING s.total_budget, s.submitted_comparisons, s.completed_comparisons, s.failed_comparisons,
              s.current_iteration
)
SELECT (SELECT coalesce(array_agg(correlation_id), '{}')
          FROM (SELECT correlation_id FROM recorded UNION SELECT correlation_id FROM same) u) AS recorded,
       bump.*
  FROM bump
"""
)


# A finished batch's figures, added once in its final transaction: what a scrape reads of finished history.
_ADD_TO_FINISHED_TOTALS = text("""
UPDATE cj_finished_totals SET
  completed_batches = completed_batches + (:state = 'COMPLETED')::int,
  failed_batches = failed_batches + (:state = 'FAILED')::int,
  cancelled_batches = cancelled_batches + (:state = 'CANCELLED')::int,
  submitted = submitted + :s, completed = completed + :c, failed = failed + :f,
  expired = expired + p.n_expired, retried = retried + p.n_retried,
  no_projections = no_projections + (:state = 'COMPLETED' AND :projections = 0
      AND EXISTS (SELECT 1 FROM cj_essays WHERE batch_id = :b AND is_anchor)
      AND EXISTS (SELECT 1 FROM cj_essays WHERE batch_id = :b AND NOT is_anchor))::int
FROM (SELECT count(*) FILTER (WHERE error_code = 'QUEUE_TIMEOUT') AS n_expired,
             count(*) FILTER (WHERE retry_of IS NOT NULL) AS n_retried
        FROM cj_comparison_pairs WHERE batch_id = :b) AS p  -- the batch's rows, read once
WHERE id = 1""")


def _fenced(epoch: int | None) -> list[Any]:
    """The condition every write of a coordinator adds: its epoch still holds the batch (None: unfenced, the
    client's and the Supervisor's few writes, which move a batch only from states no coordinator holds)."""
    return [] if epoch is None else [batch_states.c.owner_epoch == epoch]


class BatchWrites(Store):
    """What a coordinator (and the client, creating and cancelling) writes. A coordinator's writes carry the
    epoch of its claim (`claim`): a write whose epoch is stale writes nothing and raises Fenced."""

    async def claim(self, batch_id: str, host: str) -> tuple[int, BatchState] | None:
        """Take the batch for `host`: a new epoch, which fences every earlier activation's writes. None (and
        nothing changed) if the batch is not admitted (QUEUED) or already terminal."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(
                update(batch_states)
                .where(batch_states.c.batch_id == batch_id,
                       batch_states.c.state.not_in([BatchState.QUEUED, *TERMINAL_STATES]))
                .values(owner_host=host, owner_epoch=batch_states.c.owner_epoch + 1)
                .returning(batch_states.c.owner_epoch, batch_states.c.state)
            )).one_or_none()
        return None if row is None else (int(row.owner_epoch), BatchState(row.state))

    @staticmethod
    async def _check_fence(conn: AsyncConnection, batch_id: str, epoch: int | None) -> None:
        """After a write that matched nothing: raise Fenced if the reason is a stale epoch."""
        if epoch is None:
            return
        now = (await conn.execute(select(batch_states.c.owner_epoch).where(
            batch_states.c.batch_id == batch_id))).scalar_one_or_none()
        if now is not None and now != epoch:
            raise Fenced(batch_id, epoch)

    async def create_batches(self, batches_in: Sequence[NewBatch], namespace: str, submission_id: str) -> None:
        """Store each typed original request, its essays and its initial state QUEUED, all in one
        transaction: every batch is accepted, or (an id already taken) none is. `submission_id` (new per
        call) tells a repeat of this call after a lost commit reply from a second submission of the same ids."""
        try:
            async with self.engine.begin() as conn:
                stored: dict[str, str | None] = dict((await conn.execute(
                    select(batch_states.c.batch_id, batch_states.c.metadata["submission_id"].astext).where(
                        batch_states.c.batch_id.in_([b.batch_id for b in batches_in])))).all())
                if stored and len(stored) == len(batches_in) and set(stored.values()) == {submission_id}:
                    return  # this very call, committed by an earlier try whose reply was lost
                if stored:
                    raise BatchExists(f"batch_id: batch {next(iter(stored))!r} already exists")
                await conn.execute(insert(batches), [
                    {"batch_id": b.batch_id, "status": BatchStatus.ACTIVE,
                     "original_request": b.request.model_dump_json(), "budget_source": b.source,
                     "assignment_id": b.request.assignment_id, "course_code": b.request.course_code,
                     "user_id": b.request.user_id, "ray_namespace": namespace, "anchor_set_id": b.anchor_set_id}
                    for b in batches_in
                ])
                await conn.execute(insert(batch_states), [
                    {"batch_id": b.batch_id, "state": BatchState.QUEUED, "total_budget": b.total_budget,
                     "completion_threshold_pct": b.threshold_pct,
                     "metadata": BatchMetadata(budget_source=b.source, n_essays=len(b.stored_essays),
                                               submission_id=submission_id,
                                               target_reliability=b.target_reliability).patch()}
                    for b in batches_in
                ])
                await conn.execute(insert(essays), [
                    {"batch_id": b.batch_id, "essay_id": e.essay_id, "position": i, "text": e.text,
                     "text_sha256": hashlib.sha256((e.text or "").encode()).hexdigest(), "is_anchor": e.is_anchor,
                     "known_grade": e.known_grade, "anchor_ref_id": e.anchor_ref_id}
                    for b in batches_in for i, e in enumerate(b.stored_essays)
                ])
        except IntegrityError as exc:
            if "cj_batches_pkey" in str(exc.orig):  # submitted by someone else at the same moment
                raise BatchExists("batch_id: a batch of this submission already exists") from None
            raise

    async def load(self, batch_id: str) -> BatchSnapshot:
        async with self.engine.connect() as conn:
            head = (
                await conn.execute(
                    select(
                        batches.c.original_request,
                        batches.c.budget_source,
                        batch_states.c.state,
                        batch_states.c.completion_threshold_pct,
                        batch_states.c.metadata,
                        batches.c.anchor_set_id,
                        *COUNTER_COLS,
                    )
                    .join(batch_states, batch_states.c.batch_id == batches.c.batch_id)
                    .where(batches.c.batch_id == batch_id)
                )
            ).one_or_none()
            if head is None:
                raise BatchNotFound(f"batch {batch_id!r} not found", correlation_id=batch_id)
            essay_rows = (
                await conn.execute(
                    select(
                        essays.c.essay_id, essays.c.text, essays.c.is_anchor, essays.c.known_grade,
                        essays.c.score, essays.c.se, essays.c.anchor_ref_id,
                    )
                    .where(essays.c.batch_id == batch_id)
                    .order_by(essays.c.position)
                )
            ).all()
            pair_rows = (
                await conn.execute(
                    select(pairs.c.correlation_id, pairs.c.essay_a_id, pairs.c.essay_b_id, pairs.c.winner,
                           pairs.c.attempt, pairs.c.retry_of, pairs.c.error_code, pairs.c.iteration)
                    .where(pairs.c.batch_id == batch_id)
                    .order_by(pairs.c.id)
                )
            ).all()
        retried = {r.retry_of for r in pair_rows if r.retry_of}

        def attempt(r: Any) -> Attempt:
            return Attempt(r.correlation_id, r.essay_a_id, r.essay_b_id, r.attempt)

        return BatchSnapshot(
            batch_id=batch_id,
            request=BatchRequest.model_validate_json(head.original_request),
            state=BatchState(head.state),
            counters=counters_of(head),
            threshold_pct=head.completion_threshold_pct,
            budget_source=BudgetSource(head.budget_source),
            metadata=BatchMetadata.read(head.metadata),
            essays=[EssayRow(*r) for r in essay_rows],
            anchor_set_id=head.anchor_set_id,
            attempted=[(r.essay_a_id, r.essay_b_id) for r in pair_rows],
            pending=[attempt(r) for r in pair_rows if r.winner is None],
            unretried=[
                (attempt(r), ErrorType(r.error_code.lower()))
                for r in pair_rows
                if r.winner == Winner.ERROR and r.iteration == head.current_iteration
                and r.correlation_id not in retried and r.error_code
            ],
            not_judged=sum(1 for r in pair_rows if r.error_code and ErrorType(r.error_code.lower()) in NOT_JUDGED),
        )

    async def insert_round(
        self, batch_id: str, iteration: int, planned: Sequence[tuple[str, str, str]], epoch: int | None = None,
    ) -> Counters | None:
        """Commit a round's pair rows (correlation_id, a, b) with `submitted` and the move to
        WAITING_CALLBACKS, before any of them is dispatched. None if the batch left GENERATING_PAIRS."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(batch_states)
                    .where(batch_states.c.batch_id == batch_id, batch_states.c.state == BatchState.GENERATING_PAIRS,
                           *_fenced(epoch))
                    .values(
                        state=BatchState.WAITING_CALLBACKS,
                        submitted_comparisons=batch_states.c.submitted_comparisons + len(planned),
                        current_iteration=iteration,
                        last_activity_at=func.now(),
                    )
                    .returning(*COUNTER_COLS)
                )
            ).one_or_none()
            if row is None:
                await self._check_fence(conn, batch_id, epoch)
                # A repeat of this very call whose commit reply was lost finds its own rows: same answer.
                mine = (await conn.execute(
                    select(*COUNTER_COLS).where(
                        batch_states.c.batch_id == batch_id, batch_states.c.state == BatchState.WAITING_CALLBACKS,
                        batch_states.c.current_iteration == iteration,
                        select(func.count()).select_from(pairs).where(
                            pairs.c.correlation_id.in_([p[0] for p in planned])).scalar_subquery() == len(planned))
                )).one_or_none()
                return None if mine is None or not planned else counters_of(mine)
            if planned:
                # One statement with arrays: per-row parameter handling cost more than PostgreSQL's work.
                cids, a_ids, b_ids = (list(col) for col in zip(*planned, strict=True))
                await conn.execute(_INSERT_ROUND_SQL, {"batch_id": batch_id, "iteration": iteration,
                                                       "cid": cids, "a": a_ids, "b": b_ids})
            return counters_of(row)

    async def insert_retries(
        self, batch_id: str, retries: Sequence[tuple[str, Retry]], epoch: int | None = None,
    ) -> tuple[set[str], Counters] | None:
        """Commit retry rows (new correlation id, Retry) with `submitted`, while the round is still
        WAITING_CALLBACKS. A retry already planned (same `retry_of`) is not inserted twice. Returns the
        correlation ids of these rows that exist (inserted now, or by a lost-reply try of this call) and the
        counters; None if the batch left that state."""
        async with self.engine.begin() as conn:
            head = (
                await conn.execute(
                    select(batch_states.c.current_iteration)
                    .where(batch_states.c.batch_id == batch_id, batch_states.c.state == BatchState.WAITING_CALLBACKS,
                           *_fenced(epoch))
                    .with_for_update()
                )
            ).one_or_none()
            if head is None:
                await self._check_fence(conn, batch_id, epoch)
                return None
            inserted: set[str] = set()
            if retries:
                insert_rows = pg_insert(pairs).values([
                    {"correlation_id": cid, "batch_id": batch_id, "iteration": head.current_iteration,
                     "essay_a_id": r.essay_a_id, "essay_b_id": r.essay_b_id, "attempt": r.attempt,
                     "retry_of": r.retry_of}
                    for cid, r in retries
                ])
                stmt = insert_rows.on_conflict_do_nothing(
                    index_elements=["retry_of"], index_where=pairs.c.retry_of.is_not(None)
                ).returning(pairs.c.correlation_id)
                inserted = {r.correlation_id for r in (await conn.execute(stmt)).all()}
                # Rows of these very ids committed by an earlier try whose reply was lost are ours too
                # (they count in `submitted` already): they must be dispatched like the new ones.
                ours = {r[0] for r in (await conn.execute(select(pairs.c.correlation_id).where(
                    pairs.c.correlation_id.in_([cid for cid, _ in retries])))).all()}
            else:
                ours = set()
            row = (
                await conn.execute(
                    update(batch_states)
                    .where(batch_states.c.batch_id == batch_id)
                    .values(submitted_comparisons=batch_states.c.submitted_comparisons + len(inserted),
                            last_activity_at=func.now())
                    .returning(*COUNTER_COLS)
                )
            ).one()
            return ours, counters_of(row)

    async def record_results(
        self, batch_id: str, results: Sequence[ComparisonResult], epoch: int | None = None,
    ) -> tuple[set[str], Counters]:
        """Record each result at most once (the first wins; invariant 5). Returns the correlation ids whose
        row holds this result (recorded now, or by an earlier try of this same delivery whose reply was
        lost: the answer is the same either way) and the counters, both from one statement."""
        params = {
            "batch_id": batch_id,
            "epoch": epoch,
            "cid": [r.correlation_id for r in results],
            "winner": [r.winner.value for r in results],
            "confidence": [r.confidence for r in results],
            "justification": [r.justification for r in results],
            "error_code": [r.error_code for r in results],
            "error_details": [r.error_details for r in results],
            "http_status": [r.http_status for r in results],
            "request_id": [r.provider_request_id for r in results],
            "input_tokens": [r.input_tokens for r in results],
            "output_tokens": [r.output_tokens for r in results],
            "cache_read": [r.cache_read_tokens for r in results],
            "cache_write": [r.cache_write_tokens for r in results],
            "cost": [r.cost_usd for r in results],
            "latency": [r.latency_ms for r in results],
        }
        async with self.engine.begin() as conn:
            row = (await conn.execute(_RECORD_SQL, params)).one_or_none()
            if row is None:
                await self._check_fence(conn, batch_id, epoch)
                raise BatchNotFound(f"batch {batch_id!r} not found", correlation_id=batch_id)
        return set(row.recorded), counters_of(row)

    async def valid_comparisons(self, batch_id: str) -> list[Comparison]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(pairs.c.essay_a_id, pairs.c.essay_b_id, pairs.c.winner).where(
                        pairs.c.batch_id == batch_id, pairs.c.winner.in_([Winner.ESSAY_A, Winner.ESSAY_B])
                    )
                )
            ).all()
        return [Comparison(r.essay_a_id, r.essay_b_id, Winner(r.winner)) for r in rows]

    async def transition(self, batch_id: str, target: BatchState, meta: BatchMetadata | None = None,
                         epoch: int | None = None) -> bool:
        """Move along the state machine; False if the batch is not in a state that may move to target. A batch
        already in `target` answers True: the call repeated after its commit's reply was lost."""
        async with self.engine.begin() as conn:
            return (await self._transition(conn, batch_id, target, meta, epoch=epoch)
                    or await self._state(conn, batch_id) is target)

    async def _transition(
        self, conn: AsyncConnection, batch_id: str, target: BatchState, meta: BatchMetadata | None,
        reason: str | None = None, only_from: BatchState | None = None, epoch: int | None = None,
    ) -> bool:
        values: dict[str, Any] = {"state": target, "last_activity_at": func.now()}
        if meta is not None:
            values["metadata"] = meta_patch(meta.patch())
        if reason is not None:
            values["completion_reason"] = reason
        res = await conn.execute(
            update(batch_states)
            .where(batch_states.c.batch_id == batch_id,
                   batch_states.c.state.in_(sources_of(target) if only_from is None else [only_from]),
                   *_fenced(epoch))
            .values(**values)
        )
        if res.rowcount != 1:
            await self._check_fence(conn, batch_id, epoch)
        return res.rowcount == 1

    @staticmethod
    async def _state(conn: AsyncConnection, batch_id: str) -> BatchState | None:
        return (await conn.execute(select(batch_states.c.state).where(batch_states.c.batch_id == batch_id))
                ).scalar_one_or_none()

    async def merge_metadata(self, batch_id: str, meta: BatchMetadata, epoch: int | None = None) -> None:
        async with self.engine.begin() as conn:
            res = await conn.execute(
                update(batch_states).where(batch_states.c.batch_id == batch_id, *_fenced(epoch))
                .values(metadata=meta_patch(meta.patch()))
            )
            if res.rowcount != 1:
                await self._check_fence(conn, batch_id, epoch)

    async def save_round(
        self, batch_id: str, scores: dict[str, tuple[float, float]], meta: BatchMetadata, epoch: int | None = None,
    ) -> bool:
        """Store a round's fit and move SCORING → GENERATING_PAIRS, together. A batch already in
        GENERATING_PAIRS answers True with nothing written: the call repeated after its commit's reply was lost."""
        async with self.engine.begin() as conn:
            if not await self._transition(conn, batch_id, BatchState.GENERATING_PAIRS, meta, epoch=epoch):
                return await self._state(conn, batch_id) is BatchState.GENERATING_PAIRS
            await self._write_scores(conn, batch_id, scores, ranks={})
            return True

    async def _write_scores(
        self, conn: AsyncConnection, batch_id: str, scores: dict[str, tuple[float, float]], ranks: dict[str, int],
        fit_stats: dict[str, EssayFit] | None = None,
    ) -> None:
        if not scores:
            return
        stats = fit_stats or {}
        none = EssayFit(None, None, None)
        await conn.execute(
            update(essays)
            .where(essays.c.batch_id == bindparam("b_id"), essays.c.essay_id == bindparam("e_id"))
            .values(score=bindparam("s"), se=bindparam("e"), rank=bindparam("r"), infit=bindparam("inf"),
                    outfit=bindparam("outf"), misfit=bindparam("mis")),
            [
                {"b_id": batch_id, "e_id": k, "s": s, "e": se, "r": ranks.get(k), "inf": stats.get(k, none).infit,
                 "outf": stats.get(k, none).outfit, "mis": stats.get(k, none).misfit}
                for k, (s, se) in scores.items()
            ],
        )

    async def finalize(
        self,
        batch_id: str,
        target: BatchState,
        reason: str,
        *,
        scores: dict[str, tuple[float, float]] | None = None,
        ranks: dict[str, int] | None = None,
        grade_projections: Sequence[GradeProjectionOut] = (),
        meta: BatchMetadata | None = None,
        only_from: BatchState | None = None,
        fit_stats: dict[str, EssayFit] | None = None,
        epoch: int | None = None,
    ) -> float | None:
        """Reach a terminal state exactly once, with scores, projections and one outbox event, in one
        transaction. Returns the batch's age in seconds (submit → now); None (and nothing written) if
        the batch was already terminal (or, with `only_from`, not in that state)."""
        assert target in TERMINAL_STATES
        async with self.engine.begin() as conn:
            if not await self._transition(conn, batch_id, target, meta, reason=reason, only_from=only_from,
                                          epoch=epoch):
                return None
            age = (
                await conn.execute(
                    update(batches)
                    .where(batches.c.batch_id == batch_id)
                    .values(status=BatchStatus(target.value), finished_at=func.now())
                    .returning(func.extract("epoch", batches.c.finished_at - batches.c.created_at))
                )
            ).scalar_one()
            await self._write_scores(conn, batch_id, scores or {}, ranks or {}, fit_stats)
            if grade_projections:
                await conn.execute(
                    insert(projections),
                    [
                        {"batch_id": batch_id, "essay_id": p.essay_id, "grade": p.grade,
                         "probabilities": p.probabilities, "confidence": p.confidence}
                        for p in grade_projections
                    ],
                )
            counters = counters_of(
                (await conn.execute(select(*COUNTER_COLS).where(batch_states.c.batch_id == batch_id))).one()
            )
            await conn.execute(
                insert(outbox).values(
                    id=str(uuid.uuid4()),
                    aggregate_id=batch_id,
                    event_type=f"cj.batch.{target.value.lower()}",
                    payload={
                        "batch_id": batch_id,
                        "state": target.value,
                        "completion_reason": reason,
                        "counters": CountersOut(**counters_dict(counters)).model_dump(),
                        "grade_projections": len(grade_projections),
                    },
                )
            )
            await conn.execute(_ADD_TO_FINISHED_TOTALS, {"b": batch_id, "state": target.value,
                                                         "s": counters.submitted, "c": counters.completed,
                                                         "f": counters.failed, "projections": len(grade_projections)})
            return float(age)
