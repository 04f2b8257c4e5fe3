"""Table definitions used to build queries. The migrations in storage/migrations create them; a test
checks the two agree."""

from __future__ import annotations

import enum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from cjcore.contracts import TERMINAL_STATES, BatchState, BudgetSource, Winner


class BatchStatus(enum.StrEnum):
    """Coarse status on cj_batches, moved in the same transaction as the terminal state."""

    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


def _enum(py: type[enum.Enum], name: str) -> Enum:
    return Enum(py, name=name, values_callable=lambda e: [m.value for m in e], create_type=False)


# Name → Python enum; checked against pg_enum at start (storage.migrate.check_enums).
ENUMS: dict[str, type[enum.Enum]] = {
    "cj_batch_state": BatchState,
    "cj_batch_status": BatchStatus,
    "cj_budget_source": BudgetSource,
    "cj_winner": Winner,
}

metadata = MetaData()
NOW = text("now()")

batches = Table(
    "cj_batches",
    metadata,
    Column("batch_id", Text, primary_key=True),
    Column("status", _enum(BatchStatus, "cj_batch_status"), nullable=False),
    Column("original_request", Text, nullable=False),  # the typed request, byte-for-byte as validated
    Column("budget_source", _enum(BudgetSource, "cj_budget_source"), nullable=False),
    Column("assignment_id", Text),
    Column("course_code", Text),
    Column("user_id", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("finished_at", DateTime(timezone=True)),
    Column("ray_namespace", Text),  # the deployment whose admission controller owns the batch (0004)
    Column("admitted_at", DateTime(timezone=True)),  # QUEUED → INITIALIZING (0004)
    Column("anchor_set_id", Text),  # the ruler the batch is graded against (0005)
    Index("ix_cj_batches_anchor_set", "anchor_set_id", postgresql_where=text("anchor_set_id IS NOT NULL")),
    Index("ix_cj_batches_finished", "finished_at", postgresql_where=text("finished_at IS NOT NULL")),
    Index("ix_cj_batches_created", "created_at", "batch_id"),  # the newest page of the list (0009)
)

batch_states = Table(
    "cj_batch_states",
    metadata,
    Column("batch_id", Text, ForeignKey("cj_batches.batch_id", ondelete="CASCADE"), primary_key=True),
    Column("state", _enum(BatchState, "cj_batch_state"), nullable=False),
    Column("total_budget", Integer, nullable=False),
    Column("submitted_comparisons", Integer, nullable=False, server_default=text("0")),
    Column("completed_comparisons", Integer, nullable=False, server_default=text("0")),
    Column("failed_comparisons", Integer, nullable=False, server_default=text("0")),
    Column("current_iteration", Integer, nullable=False, server_default=text("0")),
    Column("completion_threshold_pct", Float, nullable=False),
    Column("completion_reason", Text),
    Column("last_activity_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("owner_host", Text),  # the coordinator host holding the batch (0006)
    Column("owner_epoch", BigInteger, nullable=False, server_default=text("0")),  # fencing epoch (0006)
    Index("ix_cj_batch_states_state", "state"),
)

essays = Table(
    "cj_essays",
    metadata,
    Column("batch_id", Text, ForeignKey("cj_batches.batch_id", ondelete="CASCADE"), primary_key=True),
    Column("essay_id", Text, primary_key=True),
    Column("position", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("text_sha256", Text, nullable=False),
    Column("is_anchor", Boolean, nullable=False, server_default=text("false")),
    Column("known_grade", Text),
    Column("anchor_ref_id", Text),
    Column("score", Float),
    Column("se", Float),
    Column("rank", Integer),
    Column("infit", Float),  # 0005
    Column("outfit", Float),
    Column("misfit", Boolean),
)

pairs = Table(
    "cj_comparison_pairs",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("correlation_id", Text, nullable=False, unique=True),
    Column("batch_id", Text, ForeignKey("cj_batches.batch_id", ondelete="CASCADE"), nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("attempt", Integer, nullable=False, server_default=text("1")),  # 2, 3…: a retry (0002)
    Column("retry_of", Text),  # the correlation id this attempt retries; unique when set
    Column("essay_a_id", Text, nullable=False),
    Column("essay_b_id", Text, nullable=False),
    Column("winner", _enum(Winner, "cj_winner")),
    Column("confidence", Float),
    Column("justification", Text),
    Column("error_code", Text),
    Column("error_details", Text),
    Column("http_status", Integer),
    Column("provider_request_id", Text),
    Column("input_tokens", Integer, nullable=False, server_default=text("0")),
    Column("output_tokens", Integer, nullable=False, server_default=text("0")),
    Column("cache_read_tokens", Integer, nullable=False, server_default=text("0")),
    Column("cache_write_tokens", Integer, nullable=False, server_default=text("0")),
    Column("cost_usd", Float, nullable=False, server_default=text("0")),
    Column("latency_ms", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("completed_at", DateTime(timezone=True)),
    Column("message_batch", Text),  # cj_message_batches.id of the Message Batch it went out in (0007)
    Index("ix_cj_pairs_batch", "batch_id"),
    Index("ix_cj_pairs_message_batch", "message_batch", postgresql_where=text("message_batch IS NOT NULL")),
    Index("ix_cj_pairs_in_flight", "created_at", postgresql_where=text("winner IS NULL")),
    Index("ux_cj_pairs_retry_of", "retry_of", unique=True, postgresql_where=text("retry_of IS NOT NULL")),
)

# Figures of finished batches, added once as each finalizes (0008): a scrape reads these and the live batches.
finished_totals = Table(
    "cj_finished_totals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    *(Column(name, BigInteger, nullable=False, server_default=text("0"))
      for name in ("completed_batches", "failed_batches", "cancelled_batches", "submitted", "completed", "failed",
                   "expired", "retried", "no_projections")),
)

# Message Batches (0007): `creating` (the row is written before the create is sent), `pending` (the provider's
# id is known), then `read`, `cancelled` or `failed` (closed). Invariant 13.
OPEN_MESSAGE_BATCH = ("creating", "pending")
message_batches = Table(
    "cj_message_batches",
    metadata,
    Column("id", Text, primary_key=True),
    Column("provider_batch_id", Text, unique=True),
    Column("ray_namespace", Text, nullable=False),
    Column("worker", Integer, nullable=False),
    Column("model", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("items", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("provider_created_at", DateTime(timezone=True)),
    Column("polled_at", DateTime(timezone=True)),
    Column("closed_at", DateTime(timezone=True)),
    Index("ix_cj_message_batches_open", "ray_namespace", "worker",
          postgresql_where=text("state IN ('creating', 'pending')")),
    Index("ux_cj_message_batches_creating", "items", unique=True, postgresql_where=text("state = 'creating'")),
)

projections = Table(
    "cj_grade_projections",
    metadata,
    Column("batch_id", Text, ForeignKey("cj_batches.batch_id", ondelete="CASCADE"), primary_key=True),
    Column("essay_id", Text, primary_key=True),
    Column("grade", Text, nullable=False),
    Column("probabilities", JSONB, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

outbox = Table(
    "cj_event_outbox",
    metadata,
    Column("id", Text, primary_key=True),  # also the idempotency key for consumers
    Column("aggregate_id", Text, nullable=False),  # the batch_id
    Column("aggregate_type", Text, nullable=False, server_default=text("'cj_batch'")),
    Column("event_type", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("published_at", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True)),  # webhook backoff (0003)
    Column("last_error", Text),
    Index("ix_cj_outbox_due", "created_at", postgresql_where=text("published_at IS NULL")),
    Index(
        "uq_cj_outbox_unpublished",
        "aggregate_id",
        "event_type",
        unique=True,
        postgresql_where=text("published_at IS NULL"),
    ),
)


anchor_sets = Table(
    "cj_anchor_sets",
    metadata,
    Column("anchor_set_id", Text, primary_key=True),
    Column("assignment_id", Text),
    Column("course_code", Text),
    Column("instructions", Text, nullable=False),
    Column("llm", JSONB, nullable=False),
    Column("grades", JSONB, nullable=False),  # grades with anchors, low → high
    Column("boundaries", JSONB, nullable=False),  # the len(grades) − 1 cuts between them, logits
    Column("calibration_batch_id", Text, nullable=False),  # the batch that judged the anchors
    Column("reliability", Float),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

anchors = Table(
    "cj_anchors",
    metadata,
    Column("anchor_set_id", Text, ForeignKey("cj_anchor_sets.anchor_set_id", ondelete="CASCADE"), primary_key=True),
    Column("anchor_ref_id", Text, primary_key=True),
    Column("text", Text, nullable=False),
    Column("text_sha256", Text, nullable=False),
    Column("known_grade", Text, nullable=False),
    Column("score", Float, nullable=False),  # calibrated, on the set's scale
    Column("se", Float, nullable=False),
    Index("ix_cj_anchors_ref", "anchor_ref_id"),
)


# States of a batch in progress (with a coordinator to have: neither waiting for admission nor finished).
# Queries name them (IN, by the state index), never the others (NOT IN), so they read the batches in
# progress only, however many have finished.
IN_PROGRESS = [s for s in BatchState if s is not BatchState.QUEUED and s not in TERMINAL_STATES]


def of_deployment(namespace: str):  # type: ignore[no-untyped-def]
    """The batches submitted to the deployment in this Ray namespace (rows before 0004: the default one)."""
    return func.coalesce(batches.c.ray_namespace, "cj") == namespace


WAITING_ON_MESSAGE_BATCH_SQL = """EXISTS (
  SELECT 1 FROM cj_comparison_pairs wp JOIN cj_message_batches wm ON wm.id = wp.message_batch
   WHERE wp.batch_id = cj_batch_states.batch_id AND wp.winner IS NULL AND wm.state IN ('creating', 'pending')
     AND coalesce(wm.polled_at, wm.created_at) > now() - make_interval(secs => {idle}))"""


def not_waiting_on_message_batch(window_s: float):  # type: ignore[no-untyped-def]
    """The batch has no comparison in an open Message Batch that answered a poll within `window_s` (one that has
    is waiting, for up to 24 h, not stuck)."""
    return text("NOT " + WAITING_ON_MESSAGE_BATCH_SQL.format(idle=float(window_s)))


def waiting_window_s(idle_s: float, poll_every_s: float) -> float:
    """How recent a Message Batch's last answered poll must be for its batches to count as waiting: the idle
    limit, plus two of the longest gaps between polls (CJ_BATCH_POLL_MAX_S)."""
    return idle_s + 2 * poll_every_s
