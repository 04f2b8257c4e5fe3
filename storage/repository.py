"""Every query the system makes. Counters move in the same statement or transaction as the rows they
count, so `cj_batch_states` always equals COUNTs over `cj_comparison_pairs` (invariant 1)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cjcore.completion import completion_pct
from cjcore.contracts import (
    TERMINAL_STATES,
    BatchRequest,
    BatchResult,
    BatchState,
    BudgetSource,
    Comparison,
    ComparisonResult,
    CompletionOut,
    CostOut,
    Counters,
    CountersOut,
    ErrorType,
    Essay,
    GradeProjectionOut,
    PositionOut,
    RankingEntry,
    ReliabilityOut,
    Winner,
    denominator,
)
from cjcore.errors import BatchExists, BatchNotFound
from cjcore.retry import NOT_JUDGED, Attempt, Retry
from cjcore.state_machine import sources_of
from storage.outage import rides_out_outages
from storage.schema import (
    NOT_LIVE,
    BatchStatus,
    batch_states,
    batches,
    essays,
    of_deployment,
    outbox,
    pairs,
    projections,
)

_COUNTER_COLS = (
    batch_states.c.total_budget,
    batch_states.c.submitted_comparisons,
    batch_states.c.completed_comparisons,
    batch_states.c.failed_comparisons,
    batch_states.c.current_iteration,
)


def _counters(row: Any) -> Counters:
    return Counters(
        total_budget=row.total_budget,
        submitted=row.submitted_comparisons,
        completed=row.completed_comparisons,
        failed=row.failed_comparisons,
        iterations=row.current_iteration,
    )


def _meta(patch: dict[str, Any]) -> Any:
    """`metadata || patch`: updates merge keys and never drop the ones they don't name."""
    return batch_states.c.metadata.op("||")(bindparam("meta_patch", patch, type_=JSONB))


@dataclass(frozen=True, slots=True)
class EssayFit:
    """How well the model fits one essay's verdicts (cj_essays.infit/outfit/misfit)."""

    infit: float | None
    outfit: float | None
    misfit: bool | None


@dataclass(slots=True)
class EssayRow:
    essay_id: str
    text: str
    is_anchor: bool
    known_grade: str | None
    score: float | None
    se: float | None
    anchor_ref_id: str | None = None


@dataclass(frozen=True, slots=True)
class NewBatch:
    batch_id: str
    request: BatchRequest
    total_budget: int
    source: BudgetSource
    threshold_pct: float
    essays: Sequence[Essay] = ()  # as linked to its ruler (cjcore.rulers.link); empty: the request's own
    anchor_set_id: str | None = None

    @property
    def stored_essays(self) -> Sequence[Essay]:
        return self.essays or self.request.essays


@dataclass(slots=True)
class BatchSnapshot:
    """Everything a coordinator needs to (re)start a batch, read from the database alone."""

    batch_id: str
    request: BatchRequest
    state: BatchState
    counters: Counters
    threshold_pct: float
    budget_source: BudgetSource
    metadata: dict[str, Any]
    essays: list[EssayRow]
    anchor_set_id: str | None = None
    attempted: list[tuple[str, str]] = field(default_factory=list)  # (a, b) of every attempt
    pending: list[Attempt] = field(default_factory=list)  # no result yet
    # Errors of the current round that no later attempt retries yet, with their error type.
    unretried: list[tuple[Attempt, ErrorType]] = field(default_factory=list)
    not_judged: int = 0  # error rows that never reached the judge (expired, cancelled)


_INSERT_ROUND_SQL = text(
    """
INSERT INTO cj_comparison_pairs (correlation_id, batch_id, iteration, essay_a_id, essay_b_id)
SELECT cid, CAST(:batch_id AS text), CAST(:iteration AS int), a, b
  FROM unnest(CAST(:cid AS text[]), CAST(:a AS text[]), CAST(:b AS text[])) AS t(cid, a, b)
"""
)

_RECORD_SQL = text(
    """
WITH incoming AS (
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
     WHERE s.batch_id = :batch_id
    RETURNING s.total_budget, s.submitted_comparisons, s.completed_comparisons, s.failed_comparisons,
              s.current_iteration
)
SELECT (SELECT coalesce(array_agg(correlation_id), '{}')
          FROM (SELECT correlation_id FROM recorded UNION SELECT correlation_id FROM same) u) AS recorded,
       bump.*
  FROM bump
"""
)


@rides_out_outages
class Repository:
    def __init__(self, engine: AsyncEngine, outage_s: float = 60.0):
        self.engine = engine
        self.outage_s = outage_s  # how long a call keeps retrying while PostgreSQL is away

    # ----------------------------------------------------------------------------------------------
    # Creating and loading a batch

    async def create_batches(self, batches_in: Sequence[NewBatch], namespace: str, submission_id: str) -> None:
        """Store each typed original request, its essays and its initial state QUEUED, all in one
        transaction: every batch is accepted, or (an id already taken) none is. `submission_id` (new per
        call) tells a repeat of this call after a lost commit reply from a second submission of the same ids."""
        try:
            async with self.engine.begin() as conn:
                stored = dict((await conn.execute(
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
                     "metadata": {"budget_source": b.source.value, "n_essays": len(b.stored_essays),
                                  "submission_id": submission_id}}
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
                        *_COUNTER_COLS,
                    )
                    .join(batch_states, batch_states.c.batch_id == batches.c.batch_id)
                    .where(batches.c.batch_id == batch_id)
                )
            ).one_or_none()
            if head is None:
                raise BatchNotFound(f"batch {batch_id!r} not found")
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
            counters=_counters(head),
            threshold_pct=head.completion_threshold_pct,
            budget_source=BudgetSource(head.budget_source),
            metadata=dict(head.metadata or {}),
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

    # ----------------------------------------------------------------------------------------------
    # The round: pairs out, results in

    async def insert_round(
        self, batch_id: str, iteration: int, planned: Sequence[tuple[str, str, str]]
    ) -> Counters | None:
        """Commit a round's pair rows (correlation_id, a, b) with `submitted` and the move to
        WAITING_CALLBACKS, before any of them is dispatched. None if the batch left GENERATING_PAIRS."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(batch_states)
                    .where(batch_states.c.batch_id == batch_id, batch_states.c.state == BatchState.GENERATING_PAIRS)
                    .values(
                        state=BatchState.WAITING_CALLBACKS,
                        submitted_comparisons=batch_states.c.submitted_comparisons + len(planned),
                        current_iteration=iteration,
                        last_activity_at=func.now(),
                    )
                    .returning(*_COUNTER_COLS)
                )
            ).one_or_none()
            if row is None:
                # A repeat of this very call whose commit reply was lost finds its own rows: same answer.
                mine = (await conn.execute(
                    select(*_COUNTER_COLS).where(
                        batch_states.c.batch_id == batch_id, batch_states.c.state == BatchState.WAITING_CALLBACKS,
                        batch_states.c.current_iteration == iteration,
                        select(func.count()).select_from(pairs).where(
                            pairs.c.correlation_id.in_([p[0] for p in planned])).scalar_subquery() == len(planned))
                )).one_or_none()
                return None if mine is None or not planned else _counters(mine)
            if planned:
                # One statement with arrays: per-row parameter handling cost more than PostgreSQL's work.
                cids, a_ids, b_ids = (list(col) for col in zip(*planned, strict=True))
                await conn.execute(_INSERT_ROUND_SQL, {"batch_id": batch_id, "iteration": iteration,
                                                       "cid": cids, "a": a_ids, "b": b_ids})
            return _counters(row)

    async def insert_retries(
        self, batch_id: str, retries: Sequence[tuple[str, Retry]]
    ) -> tuple[set[str], Counters] | None:
        """Commit retry rows (new correlation id, Retry) with `submitted`, while the round is still
        WAITING_CALLBACKS. A retry already planned (same `retry_of`) is not inserted twice. Returns the
        correlation ids of these rows that exist (inserted now, or by a lost-reply try of this call) and the
        counters; None if the batch left that state."""
        async with self.engine.begin() as conn:
            head = (
                await conn.execute(
                    select(batch_states.c.current_iteration)
                    .where(batch_states.c.batch_id == batch_id, batch_states.c.state == BatchState.WAITING_CALLBACKS)
                    .with_for_update()
                )
            ).one_or_none()
            if head is None:
                return None
            inserted: set[str] = set()
            if retries:
                stmt = pg_insert(pairs).values([
                    {"correlation_id": cid, "batch_id": batch_id, "iteration": head.current_iteration,
                     "essay_a_id": r.essay_a_id, "essay_b_id": r.essay_b_id, "attempt": r.attempt,
                     "retry_of": r.retry_of}
                    for cid, r in retries
                ])
                stmt = stmt.on_conflict_do_nothing(
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
                    .returning(*_COUNTER_COLS)
                )
            ).one()
            return ours, _counters(row)

    async def record_results(
        self, batch_id: str, results: Sequence[ComparisonResult]
    ) -> tuple[set[str], Counters]:
        """Record each result at most once (the first wins; invariant 5). Returns the correlation ids whose
        row holds this result (recorded now, or by an earlier try of this same delivery whose reply was
        lost: the answer is the same either way) and the counters, both from one statement."""
        params = {
            "batch_id": batch_id,
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
            raise BatchNotFound(f"batch {batch_id!r} not found")
        return set(row.recorded), _counters(row)

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

    # ----------------------------------------------------------------------------------------------
    # State

    async def transition(self, batch_id: str, target: BatchState, meta: dict[str, Any] | None = None) -> bool:
        """Move along the state machine; False if the batch is not in a state that may move to target."""
        async with self.engine.begin() as conn:
            return await self._transition(conn, batch_id, target, meta)

    async def _transition(
        self, conn: AsyncConnection, batch_id: str, target: BatchState, meta: dict[str, Any] | None,
        reason: str | None = None, only_from: BatchState | None = None,
    ) -> bool:
        values: dict[str, Any] = {"state": target, "last_activity_at": func.now()}
        if meta:
            values["metadata"] = _meta(meta)
        if reason is not None:
            values["completion_reason"] = reason
        res = await conn.execute(
            update(batch_states)
            .where(batch_states.c.batch_id == batch_id,
                   batch_states.c.state.in_(sources_of(target) if only_from is None else [only_from]))
            .values(**values)
        )
        return res.rowcount == 1

    async def merge_metadata(self, batch_id: str, meta: dict[str, Any]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(batch_states).where(batch_states.c.batch_id == batch_id).values(metadata=_meta(meta))
            )

    async def save_round(
        self, batch_id: str, scores: dict[str, tuple[float, float]], meta: dict[str, Any]
    ) -> bool:
        """Store a round's fit and move SCORING → GENERATING_PAIRS, together."""
        async with self.engine.begin() as conn:
            if not await self._transition(conn, batch_id, BatchState.GENERATING_PAIRS, meta):
                return False
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
        meta: dict[str, Any] | None = None,
        only_from: BatchState | None = None,
        fit_stats: dict[str, EssayFit] | None = None,
    ) -> float | None:
        """Reach a terminal state exactly once, with scores, projections and one outbox event, in one
        transaction. Returns the batch's age in seconds (submit → now); None (and nothing written) if
        the batch was already terminal (or, with `only_from`, not in that state)."""
        assert target in TERMINAL_STATES
        async with self.engine.begin() as conn:
            if not await self._transition(conn, batch_id, target, meta, reason=reason, only_from=only_from):
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
            counters = _counters(
                (await conn.execute(select(*_COUNTER_COLS).where(batch_states.c.batch_id == batch_id))).one()
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
                        "counters": CountersOut(**_counters_dict(counters)).model_dump(),
                        "grade_projections": len(grade_projections),
                    },
                )
            )
            return float(age)

    # ----------------------------------------------------------------------------------------------
    # Reading

    async def result(self, batch_id: str) -> BatchResult:
        async with self.engine.connect() as conn:
            head = (
                await conn.execute(
                    select(
                        batch_states.c.state, batch_states.c.completion_reason, batch_states.c.metadata,
                        batch_states.c.completion_threshold_pct, batches.c.budget_source, batches.c.anchor_set_id,
                        *_COUNTER_COLS,
                    )
                    .join(batches, batches.c.batch_id == batch_states.c.batch_id)
                    .where(batch_states.c.batch_id == batch_id)
                )
            ).one_or_none()
            if head is None:
                raise BatchNotFound(f"batch {batch_id!r} not found")
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
        counters = _counters(head)
        meta = dict(head.metadata or {})
        held = set(meta.get("held", []))

        def mean_square(v: float | None) -> float | None:
            return None if v is None else round(v, 3)

        return BatchResult(
            batch_id=batch_id,
            state=BatchState(head.state),
            completion_reason=head.completion_reason,
            counters=CountersOut(**_counters_dict(counters)),
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
            reliability=ReliabilityOut(**meta.get("reliability", {"ssr": 0.0})),
            position=PositionOut(**meta.get("position", {})),
            cost=cost,
            completion=CompletionOut(
                denominator=denominator(counters.total_budget, n_essays, len(held)),
                threshold_pct=head.completion_threshold_pct,
                completion_pct=round(completion_pct(counters, n_essays, len(held)), 2),
                stability_threshold=meta.get("completion", {}).get("stability_threshold"),
                last_max_change=meta.get("completion", {}).get("last_max_change"),
            ),
            budget_source=BudgetSource(head.budget_source),
            anchor_set_id=head.anchor_set_id,
            judges=meta.get("judges", []),
            error=meta.get("error"),
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

    async def state_of(self, batch_id: str) -> tuple[BatchState, Counters]:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(batch_states.c.state, *_COUNTER_COLS).where(batch_states.c.batch_id == batch_id)
                )
            ).one_or_none()
        if row is None:
            raise BatchNotFound(f"batch {batch_id!r} not found")
        return BatchState(row.state), _counters(row)

    async def health(self, batch_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM cj_batch_health"
        params: dict[str, Any] = {}
        if batch_id is not None:
            sql += " WHERE batch_id = :b"
            params["b"] = batch_id
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(sql + " ORDER BY created_at"), params)).mappings().all()
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
            "counters": _counters_dict(counters),
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

    # ----------------------------------------------------------------------------------------------
    # Supervision

    async def stuck_pairs(self, older_than_s: float, namespace: str) -> dict[str, list[str]]:
        """Correlation ids of the deployment's batches without a result for longer than `older_than_s`."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT p.batch_id, p.correlation_id FROM cj_comparison_pairs p JOIN cj_batches b "
                        "USING (batch_id) WHERE p.winner IS NULL AND coalesce(b.ray_namespace, 'cj') = :ns "
                        "AND p.created_at < now() - make_interval(secs => :s) ORDER BY p.id"
                    ),
                    {"s": older_than_s, "ns": namespace},
                )
            ).all()
        out: dict[str, list[str]] = {}
        for b, cid in rows:
            out.setdefault(b, []).append(cid)
        return out

    async def progress_of(self, batch_ids: Sequence[str]) -> tuple[set[str], int]:
        """(The batches in a terminal state, results recorded) over these batches: a load test's progress."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(batch_states.c.batch_id, batch_states.c.state.in_(list(TERMINAL_STATES)),
                       batch_states.c.completed_comparisons + batch_states.c.failed_comparisons)
                .where(batch_states.c.batch_id.in_(list(batch_ids)))
            )).all()
        return {r[0] for r in rows if r[1]}, sum(int(r[2]) for r in rows)

    async def check_invariants(self, batch_id: str) -> list[str]:
        """DESIGN §3 invariants 1, 2, 3 and 6 for one batch, from the database alone; [] when they hold."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        """
SELECT s.state, s.total_budget, s.submitted_comparisons AS submitted, s.completed_comparisons AS completed,
       s.failed_comparisons AS failed, b.budget_source, b.original_request,
       (SELECT count(*) FROM cj_comparison_pairs p WHERE p.batch_id = s.batch_id) AS rows,
       (SELECT count(*) FROM cj_comparison_pairs p WHERE p.batch_id = s.batch_id
            AND p.winner IN ('essay_a', 'essay_b')) AS valid_rows,
       (SELECT count(*) FROM cj_comparison_pairs p WHERE p.batch_id = s.batch_id AND p.winner = 'error') AS error_rows,
       (SELECT count(*) FROM cj_event_outbox o WHERE o.aggregate_id = s.batch_id) AS events,
       (SELECT count(*) FROM cj_essays e WHERE e.batch_id = s.batch_id) AS essays
FROM cj_batch_states s JOIN cj_batches b USING (batch_id) WHERE s.batch_id = :b"""
                    ),
                    {"b": batch_id},
                )
            ).one_or_none()
        if row is None:
            return [f"batch {batch_id} not found"]
        bad = []
        if row.submitted != row.rows:
            bad.append(f"submitted {row.submitted} != {row.rows} pair rows")
        if row.completed != row.valid_rows:
            bad.append(f"completed {row.completed} != {row.valid_rows} valid rows")
        if row.failed != row.error_rows:
            bad.append(f"failed {row.failed} != {row.error_rows} error rows")
        if not row.completed + row.failed <= row.submitted <= row.total_budget:
            bad.append(f"completed+failed <= submitted <= budget broken: {row.completed}+{row.failed}, "
                       f"{row.submitted}, {row.total_budget}")
        requested = BatchRequest.model_validate_json(row.original_request).max_comparisons
        if row.budget_source == BudgetSource.RUNNER_OVERRIDE.value and requested != row.total_budget:
            bad.append(f"total_budget {row.total_budget} != requested max_comparisons {requested}")
        if row.completed > denominator(row.total_budget, row.essays):
            bad.append("valid results exceed the completion denominator")
        terminal = BatchState(row.state) in TERMINAL_STATES
        if terminal and row.events != 1:
            bad.append(f"{row.events} outbox events for a terminal batch (expected 1)")
        if not terminal and row.events != 0:
            bad.append(f"{row.events} outbox events for a batch still {row.state}")
        return bad

    async def idle_batch_ids(self, idle_s: float, namespace: str) -> list[str]:
        """The deployment's admitted, non-terminal batches with no activity for `idle_s` seconds."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(batch_states.c.batch_id)
                    .join(batches, batches.c.batch_id == batch_states.c.batch_id)
                    .where(
                        batch_states.c.state.not_in(NOT_LIVE),
                        batch_states.c.last_activity_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, idle_s),
                        of_deployment(namespace),
                    )
                )
            ).all()
        return [r[0] for r in rows]

    async def repair_missing_events(self) -> list[str]:
        """Terminal batches without their outbox event get it now (one statement; a batch that has any
        event is left alone, so this never makes a second one). Returns the repaired batch ids."""
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    text("""
INSERT INTO cj_event_outbox (id, aggregate_id, event_type, payload)
SELECT gen_random_uuid()::text, s.batch_id, 'cj.batch.' || lower(s.state::text),
       jsonb_build_object('batch_id', s.batch_id, 'state', s.state::text,
                          'completion_reason', s.completion_reason, 'repaired', true)
  FROM cj_batch_states s
 WHERE s.state IN ('COMPLETED', 'FAILED', 'CANCELLED')
   AND NOT EXISTS (SELECT 1 FROM cj_event_outbox o WHERE o.aggregate_id = s.batch_id)
RETURNING aggregate_id""")
                )
            ).all()
        return [r[0] for r in rows]

    async def completed_without_projections(self) -> list[str]:
        """COMPLETED batches with anchors and students but no grade projections (seed 002's symptom)."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text("""
SELECT batch_id FROM cj_batch_health
 WHERE state = 'COMPLETED' AND anchors > 0 AND essays > anchors AND projections = 0""")
                )
            ).all()
        return [r[0] for r in rows]

    # ----------------------------------------------------------------------------------------------
    # The outbox publisher

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

    async def terminal_event(self, batch_id: str) -> dict[str, Any] | None:
        """The batch's completion/failure/cancellation event, once it exists."""
        events = await self.events(batch_id)
        return events[0] if events else None

    async def metrics_snapshot(self, idle_s: float) -> dict[str, Any]:
        """What /metrics reads from the record at each scrape (actors/metrics_server.py)."""
        async with self.engine.connect() as conn:
            by_state = dict((await conn.execute(text(
                "SELECT state::text, count(*) FROM cj_batch_states GROUP BY state"))).all())
            head = (await conn.execute(text("""
SELECT coalesce(sum(submitted_comparisons), 0) AS submitted, coalesce(sum(completed_comparisons), 0) AS completed,
       coalesce(sum(failed_comparisons), 0) AS failed,
       count(*) FILTER (WHERE state NOT IN ('QUEUED', 'COMPLETED', 'FAILED', 'CANCELLED')
                          AND last_activity_at < now() - make_interval(secs => :idle)) AS stuck,
       p.expired, p.retried,
       (SELECT count(*) FROM cj_event_outbox WHERE published_at IS NULL) AS outbox_unpublished,
       (SELECT count(*) FROM cj_batch_health WHERE state = 'COMPLETED' AND anchors > 0 AND essays > anchors
                                              AND projections = 0) AS no_projections
  FROM cj_batch_states,
       (SELECT count(*) FILTER (WHERE error_code = 'QUEUE_TIMEOUT') AS expired,
               count(*) FILTER (WHERE retry_of IS NOT NULL) AS retried
          FROM cj_comparison_pairs) AS p  -- one scan of the pairs, not two
 GROUP BY p.expired, p.retried"""), {"idle": idle_s})).one()
        return {
            "batches": {state.value: int(by_state.get(state.value, 0)) for state in BatchState},
            "comparisons": {"submitted": head.submitted, "completed": head.completed, "failed": head.failed,
                            "expired": head.expired, "retried": head.retried},
            "stuck": head.stuck, "no_projections": head.no_projections,
            "outbox_unpublished": head.outbox_unpublished,
        }

    async def active_batch_ids(self, namespace: str) -> list[str]:
        """The deployment's admitted batches not yet terminal (each should have a coordinator)."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(batch_states.c.batch_id)
                    .join(batches, batches.c.batch_id == batch_states.c.batch_id)
                    .where(batch_states.c.state.not_in(NOT_LIVE),
                           of_deployment(namespace))
                )
            ).all()
        return [r[0] for r in rows]


def _counters_dict(c: Counters) -> dict[str, int]:
    return {"total_budget": c.total_budget, "submitted": c.submitted, "completed": c.completed,
            "failed": c.failed, "iterations": c.iterations}
