"""The Supervisor's queries: stuck work, idle and live batches, terminal batches missing their event."""

from __future__ import annotations

from sqlalchemy import func, select, text

from storage.records import (
    Store,
)
from storage.schema import (
    IN_PROGRESS,
    batch_states,
    batches,
    not_waiting_on_message_batch,
    of_deployment,
    waiting_window_s,
)

RECENT_S = 86_400.0  # finished batches a sweep still checks (events, projections): the last day's
STUCK_PER_SWEEP = 10_000  # the oldest requests without a result a sweep considers (the rest, next sweep)


class SupervisionQueries(Store):
    """What the Supervisor sweeps."""

    async def stuck_pairs(self, older_than_s: float, namespace: str) -> dict[str, list[str]]:
        """Correlation ids of the deployment's batches without a result for longer than `older_than_s`, leaving
        out those waiting in an open Message Batch (read or cancelled whatever happens: invariant 13)."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT p.batch_id, p.correlation_id FROM cj_comparison_pairs p JOIN cj_batches b "
                        "USING (batch_id) WHERE p.winner IS NULL AND coalesce(b.ray_namespace, 'cj') = :ns "
                        "AND p.created_at < now() - make_interval(secs => :s) AND NOT EXISTS (SELECT 1 FROM "
                        "cj_message_batches m WHERE m.id = p.message_batch AND m.state IN ('creating', 'pending')) "
                        "ORDER BY p.id LIMIT :limit"
                    ),
                    {"s": older_than_s, "ns": namespace, "limit": STUCK_PER_SWEEP},
                )
            ).all()
        out: dict[str, list[str]] = {}
        for b, cid in rows:
            out.setdefault(b, []).append(cid)
        return out

    async def idle_batch_ids(self, idle_s: float, namespace: str, poll_every_s: float = 0.0) -> list[str]:
        """The deployment's admitted, non-terminal batches with no activity for `idle_s` seconds."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(batch_states.c.batch_id)
                    .join(batches, batches.c.batch_id == batch_states.c.batch_id)
                    .where(
                        batch_states.c.state.in_(IN_PROGRESS),
                        batch_states.c.last_activity_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, idle_s),
                        of_deployment(namespace), not_waiting_on_message_batch(waiting_window_s(idle_s, poll_every_s)),
                    )
                )
            ).all()
        return [r[0] for r in rows]

    async def active_batch_ids(self, namespace: str) -> list[str]:
        """The deployment's admitted batches not yet terminal (each should have a coordinator)."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(batch_states.c.batch_id)
                    .join(batches, batches.c.batch_id == batch_states.c.batch_id)
                    .where(batch_states.c.state.in_(IN_PROGRESS),
                           of_deployment(namespace))
                )
            ).all()
        return [r[0] for r in rows]

    async def owned_by(self, host: str, namespace: str) -> list[str]:
        """The deployment's admitted, non-terminal batches a coordinator host last claimed (its restart
        rebuilds them)."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(batch_states.c.batch_id)
                    .join(batches, batches.c.batch_id == batch_states.c.batch_id)
                    .where(batch_states.c.state.in_(IN_PROGRESS), batch_states.c.owner_host == host,
                           of_deployment(namespace))
                )
            ).all()
        return [r[0] for r in rows]

    async def repair_missing_events(self, window_s: float = RECENT_S) -> list[str]:
        """Batches finished within `window_s` without their outbox event get it now (one statement; a batch that
        has any event is left alone, so this never makes a second one). Returns the repaired batch ids. Only the
        recently finished are looked at (by index): a sweep does not grow with finished history."""
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    text("""
INSERT INTO cj_event_outbox (id, aggregate_id, event_type, payload)
SELECT gen_random_uuid()::text, s.batch_id, 'cj.batch.' || lower(s.state::text),
       jsonb_build_object('batch_id', s.batch_id, 'state', s.state::text,
                          'completion_reason', s.completion_reason, 'repaired', true)
  FROM cj_batch_states s JOIN cj_batches b USING (batch_id)
 WHERE b.finished_at > now() - make_interval(secs => :window)
   AND s.state IN ('COMPLETED', 'FAILED', 'CANCELLED')
   AND NOT EXISTS (SELECT 1 FROM cj_event_outbox o WHERE o.aggregate_id = s.batch_id)
RETURNING aggregate_id"""), {"window": window_s}
                )
            ).all()
        return [r[0] for r in rows]

    async def completed_without_projections(self, window_s: float = RECENT_S) -> list[str]:
        """Batches COMPLETED within `window_s` with anchors and students but no grade projections (seed 002's
        symptom); the metric `cj_completed_without_projections` counts them all (cj_finished_totals)."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text("""
SELECT h.batch_id FROM cj_batch_health h
 WHERE h.batch_id IN (SELECT batch_id FROM cj_batches WHERE finished_at > now() - make_interval(secs => :window))
   AND h.state = 'COMPLETED' AND h.anchors > 0 AND h.essays > h.anchors AND h.projections = 0"""),
                    {"window": window_s},
                )
            ).all()
        return [r[0] for r in rows]
