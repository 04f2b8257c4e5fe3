"""Admission: batches are accepted QUEUED and admitted later; each records the deployment (Ray namespace)
whose admission controller owns it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TYPE cj_batch_state ADD VALUE IF NOT EXISTS 'QUEUED' BEFORE 'INITIALIZING'")
    op.execute("ALTER TABLE cj_batches ADD COLUMN ray_namespace text, ADD COLUMN admitted_at timestamptz")
    op.execute("CREATE INDEX ix_cj_batch_states_state ON cj_batch_states (state)")


def downgrade() -> None:
    # PostgreSQL cannot drop an enum value; QUEUED stays in the type.
    op.execute("DROP INDEX IF EXISTS ix_cj_batch_states_state")
    op.execute("ALTER TABLE cj_batches DROP COLUMN IF EXISTS admitted_at, DROP COLUMN IF EXISTS ray_namespace")
