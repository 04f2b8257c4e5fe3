"""The newest batches first without reading them all: `GET /batches` and `GET /v1/batches?newest=N` read a page
of cj_batch_health by an index on the batches' creation time (a sort over the view would compute every
batch's counts first).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_cj_batches_created ON cj_batches (created_at, batch_id)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_cj_batches_created")
