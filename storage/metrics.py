"""Figures from the record: what /metrics reads at each scrape, DESIGN §3's invariants checked per batch,
and the progress and reports of load tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, text

from cjcore.contracts import (
    TERMINAL_STATES,
    BatchRequest,
    BatchState,
    BudgetSource,
    denominator,
)
from storage.records import (
    Store,
)
from storage.schema import (
    WAITING_ON_MESSAGE_BATCH_SQL,
    batch_states,
    waiting_window_s,
)


class MetricsQueries(Store):
    """Read-only figures over many rows."""

    async def metrics_snapshot(self, idle_s: float, poll_every_s: float = 0.0) -> dict[str, Any]:
        """What /metrics reads from the record at each scrape (actors/metrics_server.py): finished batches from
        the totals their final transactions added to, the rest from the batches not finished (queued or in
        progress, by the state index): the work does not grow with finished history."""
        live = ", ".join(f"'{s.value}'" for s in BatchState if s not in TERMINAL_STATES)
        async with self.engine.connect() as conn:
            done = (await conn.execute(text("SELECT * FROM cj_finished_totals WHERE id = 1"))).one()
            by_state: dict[str, int] = dict((await conn.execute(text(
                f"SELECT state::text, count(*) FROM cj_batch_states WHERE state IN ({live}) GROUP BY state"))).all())
            head = (await conn.execute(text(f"""
WITH p AS (  -- the live batches' rows, read once
  SELECT count(*) FILTER (WHERE error_code = 'QUEUE_TIMEOUT') AS expired,
         count(*) FILTER (WHERE retry_of IS NOT NULL) AS retried
    FROM cj_comparison_pairs WHERE batch_id IN (SELECT batch_id FROM cj_batch_states WHERE state IN ({live})))
SELECT coalesce(sum(submitted_comparisons), 0) AS submitted, coalesce(sum(completed_comparisons), 0) AS completed,
       coalesce(sum(failed_comparisons), 0) AS failed,
       count(*) FILTER (WHERE state <> 'QUEUED' AND last_activity_at < now() - make_interval(secs => :idle)
                          AND NOT """ + WAITING_ON_MESSAGE_BATCH_SQL.format(idle=":window") + f""") AS stuck,
       (SELECT expired FROM p) AS expired, (SELECT retried FROM p) AS retried,
       (SELECT count(*) FROM cj_event_outbox WHERE published_at IS NULL) AS outbox_unpublished
  FROM cj_batch_states WHERE state IN ({live})"""),
                {"idle": idle_s, "window": waiting_window_s(idle_s, poll_every_s)})).one()
        by_state.update(COMPLETED=done.completed_batches, FAILED=done.failed_batches,
                        CANCELLED=done.cancelled_batches)
        return {
            "batches": {state.value: int(by_state.get(state.value, 0)) for state in BatchState},
            "comparisons": {"submitted": done.submitted + head.submitted, "completed": done.completed + head.completed,
                            "failed": done.failed + head.failed, "expired": done.expired + head.expired,
                            "retried": done.retried + head.retried},
            "stuck": head.stuck, "no_projections": done.no_projections,
            "outbox_unpublished": head.outbox_unpublished,
        }

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

    async def progress_of(self, batch_ids: Sequence[str]) -> tuple[set[str], int, int]:
        """(The batches in a terminal state, results recorded, batches in progress: admitted and not terminal)
        over these batches: a load test's progress."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(batch_states.c.batch_id, batch_states.c.state.in_(list(TERMINAL_STATES)),
                       batch_states.c.completed_comparisons + batch_states.c.failed_comparisons,
                       batch_states.c.state == BatchState.QUEUED)
                .where(batch_states.c.batch_id.in_(list(batch_ids)))
            )).all()
        return {r[0] for r in rows if r[1]}, sum(int(r[2]) for r in rows), sum(1 for r in rows if not r[1] and not r[3])

    async def load_report(self, ids: Sequence[str], others: Sequence[str] = ()) -> dict[str, Any]:
        """A load test's batches `ids` counted from the rows; `others` (another batch that went through the
        same provider) count only where the provider's own figures are compared with the rows."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(text("""
SELECT count(*) AS attempts,
       count(*) FILTER (WHERE winner IS NULL) AS without_result,
       count(*) FILTER (WHERE winner IN ('essay_a', 'essay_b')) AS valid,
       count(*) FILTER (WHERE winner = 'error') AS errors,
       (SELECT count(*) FROM cj_comparison_pairs WHERE batch_id = ANY(:all) AND winner IS NOT NULL
           AND coalesce(error_code, '') NOT IN ('QUEUE_TIMEOUT', 'CANCELLED')) AS answered,
       (SELECT count(*) FROM cj_comparison_pairs WHERE batch_id = ANY(:all)
           AND winner IN ('essay_a', 'essay_b')) AS valid_all,
       count(*) FILTER (WHERE retry_of IS NOT NULL) AS retries,
       count(*) FILTER (WHERE http_status IS NOT NULL) AS http_answers,
       count(*) FILTER (WHERE http_status = 429) AS http_429,
       count(*) FILTER (WHERE error_code = 'QUEUE_TIMEOUT') AS expired,
       (SELECT sum(completed_comparisons + failed_comparisons) FROM cj_batch_states
         WHERE batch_id = ANY(:ids)) AS counted,
       (SELECT count(*) FROM cj_event_outbox WHERE aggregate_id = ANY(:ids)) AS events
  FROM cj_comparison_pairs WHERE batch_id = ANY(:ids)"""), {"ids": list(ids), "all": [*ids, *others]})).one()
            per_batch = [r[0] for r in (await conn.execute(text(
                "SELECT count(*) FROM cj_event_outbox WHERE aggregate_id = ANY(:ids) GROUP BY aggregate_id"),
                {"ids": list(ids)})).all()]
        return {**row._asdict(), "events_per_batch": per_batch}

    async def pair_span(self, ids: Sequence[str]) -> dict[str, Any]:
        """Rows, answered rows and seconds from the first row's creation to the last result, over batches."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(text(
                "SELECT count(*) AS rows, count(*) FILTER (WHERE winner IS NOT NULL) AS answered, "
                "extract(epoch FROM max(completed_at) - min(created_at)) AS span "
                "FROM cj_comparison_pairs WHERE batch_id = ANY(:b)"), {"b": list(ids)})).one()
        return {"rows": row.rows, "answered": row.answered, "span": float(row.span or 0.0)}

    async def finalize_lag(self, batch_id: str) -> float:
        """Seconds from a batch's last result to its terminal state."""
        async with self.engine.connect() as conn:
            lag = (await conn.execute(text(
                "SELECT extract(epoch FROM b.finished_at - max(p.completed_at)) FROM cj_batches b "
                "JOIN cj_comparison_pairs p USING (batch_id) WHERE b.batch_id = :b GROUP BY b.finished_at"
            ), {"b": batch_id})).scalar_one()
        return float(lag)
