"""Retries as new attempts: each pair row knows its attempt number and the attempt it retries.

The unique index on `retry_of` makes a retry idempotent: a restarted coordinator that plans the same
retry again inserts nothing (DESIGN §3 invariants 1 and 7).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE cj_comparison_pairs ADD COLUMN attempt integer NOT NULL DEFAULT 1, "
               "ADD COLUMN retry_of text")
    op.execute("ALTER TABLE cj_comparison_pairs ADD CONSTRAINT cj_pairs_attempt_positive CHECK (attempt >= 1)")
    op.execute("CREATE UNIQUE INDEX ux_cj_pairs_retry_of ON cj_comparison_pairs (retry_of) "
               "WHERE retry_of IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ux_cj_pairs_retry_of")
    op.execute("ALTER TABLE cj_comparison_pairs DROP CONSTRAINT IF EXISTS cj_pairs_attempt_positive, "
               "DROP COLUMN IF EXISTS retry_of, DROP COLUMN IF EXISTS attempt")
