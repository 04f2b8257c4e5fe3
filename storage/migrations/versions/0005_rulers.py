"""Rulers: registered anchor sets (calibrated once, DESIGN §4.6), the set a batch is graded against, and
per-essay misfit.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


UPGRADE = [
    """CREATE TABLE cj_anchor_sets (
    anchor_set_id text PRIMARY KEY,
    assignment_id text,
    course_code text,
    instructions text NOT NULL,
    llm jsonb NOT NULL,
    grades jsonb NOT NULL,
    boundaries jsonb NOT NULL,
    calibration_batch_id text NOT NULL,
    reliability double precision,
    created_at timestamptz NOT NULL DEFAULT now()
)""",
    """CREATE TABLE cj_anchors (
    anchor_set_id text NOT NULL REFERENCES cj_anchor_sets (anchor_set_id) ON DELETE CASCADE,
    anchor_ref_id text NOT NULL,
    text text NOT NULL,
    text_sha256 text NOT NULL,
    known_grade text NOT NULL,
    score double precision NOT NULL,
    se double precision NOT NULL,
    PRIMARY KEY (anchor_set_id, anchor_ref_id)
)""",
    "CREATE INDEX ix_cj_anchors_ref ON cj_anchors (anchor_ref_id)",
    "ALTER TABLE cj_batches ADD COLUMN anchor_set_id text",
    "CREATE INDEX ix_cj_batches_anchor_set ON cj_batches (anchor_set_id) WHERE anchor_set_id IS NOT NULL",
    "ALTER TABLE cj_essays ADD COLUMN infit double precision, ADD COLUMN outfit double precision, "
    "ADD COLUMN misfit boolean",
]

DOWNGRADE = [
    "ALTER TABLE cj_essays DROP COLUMN IF EXISTS misfit, DROP COLUMN IF EXISTS outfit, DROP COLUMN IF EXISTS infit",
    "DROP INDEX IF EXISTS ix_cj_batches_anchor_set",
    "ALTER TABLE cj_batches DROP COLUMN IF EXISTS anchor_set_id",
    "DROP TABLE IF EXISTS cj_anchors",
    "DROP TABLE IF EXISTS cj_anchor_sets",
]


def upgrade() -> None:
    for statement in UPGRADE:  # asyncpg prepares each statement: one command at a time
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
