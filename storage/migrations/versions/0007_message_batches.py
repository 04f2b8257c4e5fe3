"""Message Batches in PostgreSQL (invariant 13): a row per Message Batch, written before its create is sent
(`creating`), given the provider's id the moment the create answers (`pending`), and closed once its
results are recorded (`read`) or it is cancelled or given up. Each comparison row names the Message Batch it
went out in, so the Supervisor never expires a comparison that is waiting in an open one, and a restarted
worker rebuilds what it was waiting for. No two creates awaiting their answer have the same number of requests,
so a create whose answer was lost is recognised in the API's list (which shows nothing of ours but sizes and
times).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE cj_message_batches (
    id text PRIMARY KEY,
    provider_batch_id text UNIQUE,
    ray_namespace text NOT NULL,
    worker integer NOT NULL,
    model text NOT NULL,
    state text NOT NULL CHECK (state IN ('creating', 'pending', 'read', 'cancelled', 'failed')),
    items integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    provider_created_at timestamptz,
    polled_at timestamptz,
    closed_at timestamptz
)""")
    op.execute("CREATE INDEX ix_cj_message_batches_open ON cj_message_batches (ray_namespace, worker) "
               "WHERE state IN ('creating', 'pending')")
    # Creates awaiting their answer have distinct sizes: a lost create is recognised in the API's list by its size.
    op.execute("CREATE UNIQUE INDEX ux_cj_message_batches_creating ON cj_message_batches (items) "
               "WHERE state = 'creating'")
    op.execute("ALTER TABLE cj_comparison_pairs ADD COLUMN message_batch text")
    op.execute("CREATE INDEX ix_cj_pairs_message_batch ON cj_comparison_pairs (message_batch) "
               "WHERE message_batch IS NOT NULL")


def downgrade() -> None:
    op.execute("ALTER TABLE cj_comparison_pairs DROP COLUMN IF EXISTS message_batch")
    op.execute("DROP TABLE IF EXISTS cj_message_batches")
