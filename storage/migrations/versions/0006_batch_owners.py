"""Coordinator hosts: which host holds a batch (`owner_host`, its `cj-coordinators-<i>` name) and a fencing
epoch that every claim raises and every write of the batch checks, so a host that lost a batch can no longer
write it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE cj_batch_states ADD COLUMN owner_host text, "
               "ADD COLUMN owner_epoch bigint NOT NULL DEFAULT 0")


def downgrade() -> None:
    op.execute("ALTER TABLE cj_batch_states DROP COLUMN IF EXISTS owner_epoch, DROP COLUMN IF EXISTS owner_host")
