"""Outbox delivery: when the next attempt at the webhook is due, and why the last one failed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE cj_event_outbox ADD COLUMN next_attempt_at timestamptz, ADD COLUMN last_error text")
    op.execute("CREATE INDEX ix_cj_outbox_due ON cj_event_outbox (created_at) WHERE published_at IS NULL")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_cj_outbox_due")
    op.execute("ALTER TABLE cj_event_outbox DROP COLUMN IF EXISTS last_error, DROP COLUMN IF EXISTS next_attempt_at")
