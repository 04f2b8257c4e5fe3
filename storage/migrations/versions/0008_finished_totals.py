"""What a scrape and a sweep read no longer grows with finished history (invariant 14): the figures of
finished batches are added once, when each batch finalizes, to a one-row table; live figures are read over
the live batches alone (their states by index); the Supervisor looks at recently finished batches only.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TERMINAL = "('COMPLETED', 'FAILED', 'CANCELLED')"


def upgrade() -> None:
    op.execute("""
CREATE TABLE cj_finished_totals (
    id integer PRIMARY KEY CHECK (id = 1),
    completed_batches bigint NOT NULL DEFAULT 0,
    failed_batches bigint NOT NULL DEFAULT 0,
    cancelled_batches bigint NOT NULL DEFAULT 0,
    submitted bigint NOT NULL DEFAULT 0,
    completed bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    expired bigint NOT NULL DEFAULT 0,
    retried bigint NOT NULL DEFAULT 0,
    no_projections bigint NOT NULL DEFAULT 0
)""")
    # Seeded once from what is already finished (the last full scan).
    op.execute(f"""
INSERT INTO cj_finished_totals
SELECT 1,
       count(*) FILTER (WHERE s.state = 'COMPLETED'), count(*) FILTER (WHERE s.state = 'FAILED'),
       count(*) FILTER (WHERE s.state = 'CANCELLED'),
       coalesce(sum(s.submitted_comparisons), 0), coalesce(sum(s.completed_comparisons), 0),
       coalesce(sum(s.failed_comparisons), 0),
       (SELECT count(*) FROM cj_comparison_pairs p JOIN cj_batch_states t USING (batch_id)
         WHERE t.state IN {TERMINAL} AND p.error_code = 'QUEUE_TIMEOUT'),
       (SELECT count(*) FROM cj_comparison_pairs p JOIN cj_batch_states t USING (batch_id)
         WHERE t.state IN {TERMINAL} AND p.retry_of IS NOT NULL),
       (SELECT count(*) FROM cj_batch_health WHERE state = 'COMPLETED' AND anchors > 0 AND essays > anchors
                                              AND projections = 0)
  FROM cj_batch_states s WHERE s.state IN {TERMINAL}""")
    op.execute("CREATE INDEX ix_cj_batches_finished ON cj_batches (finished_at) WHERE finished_at IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_cj_batches_finished")
    op.execute("DROP TABLE IF EXISTS cj_finished_totals")
