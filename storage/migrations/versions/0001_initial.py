"""Initial schema: batches, states, essays, comparison pairs, grade projections, outbox, health view.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UP = """
CREATE TYPE cj_batch_state AS ENUM ('INITIALIZING', 'GENERATING_PAIRS', 'WAITING_CALLBACKS', 'SCORING',
                                    'COMPLETED', 'FAILED', 'CANCELLED');

CREATE TYPE cj_batch_status AS ENUM ('ACTIVE', 'COMPLETED', 'FAILED', 'CANCELLED');

CREATE TYPE cj_budget_source AS ENUM ('runner_override', 'service_default');

CREATE TYPE cj_winner AS ENUM ('essay_a', 'essay_b', 'error');

CREATE TABLE cj_batches (
    batch_id          text PRIMARY KEY,
    status            cj_batch_status NOT NULL,
    original_request  text NOT NULL,
    budget_source     cj_budget_source NOT NULL,
    assignment_id     text,
    course_code       text,
    user_id           text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz
);

CREATE TABLE cj_batch_states (
    batch_id                  text PRIMARY KEY REFERENCES cj_batches(batch_id) ON DELETE CASCADE,
    state                     cj_batch_state NOT NULL,
    total_budget              integer NOT NULL,
    submitted_comparisons     integer NOT NULL DEFAULT 0,
    completed_comparisons     integer NOT NULL DEFAULT 0,
    failed_comparisons        integer NOT NULL DEFAULT 0,
    current_iteration         integer NOT NULL DEFAULT 0,
    completion_threshold_pct  double precision NOT NULL,
    completion_reason         text,
    last_activity_at          timestamptz NOT NULL DEFAULT now(),
    metadata                  jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- invariants 1 and 3, held by the database itself
    CONSTRAINT ck_cj_counters_nonneg CHECK (completed_comparisons >= 0 AND failed_comparisons >= 0),
    CONSTRAINT ck_cj_results_le_submitted CHECK (completed_comparisons + failed_comparisons <= submitted_comparisons),
    CONSTRAINT ck_cj_submitted_le_budget CHECK (submitted_comparisons <= total_budget),
    CONSTRAINT ck_cj_budget_positive CHECK (total_budget > 0),
    CONSTRAINT ck_cj_threshold_pct CHECK (completion_threshold_pct > 0 AND completion_threshold_pct <= 100)
);

-- Invariant 2 (total_budget set once) and invariant 8 (terminal states never change).
CREATE FUNCTION cj_guard_batch_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.total_budget <> OLD.total_budget THEN
        RAISE EXCEPTION 'cj: total_budget of batch % is fixed at %', OLD.batch_id, OLD.total_budget;
    END IF;
    IF OLD.state IN ('COMPLETED', 'FAILED', 'CANCELLED') AND NEW.state <> OLD.state THEN
        RAISE EXCEPTION 'cj: batch % is % and cannot change state', OLD.batch_id, OLD.state;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER cj_guard_batch_state BEFORE UPDATE ON cj_batch_states
    FOR EACH ROW EXECUTE FUNCTION cj_guard_batch_state();

CREATE TABLE cj_essays (
    batch_id       text NOT NULL REFERENCES cj_batches(batch_id) ON DELETE CASCADE,
    essay_id       text NOT NULL,
    position       integer NOT NULL,
    text           text NOT NULL,
    text_sha256    text NOT NULL,
    is_anchor      boolean NOT NULL DEFAULT false,
    known_grade    text,
    anchor_ref_id  text,
    score          double precision,
    se             double precision,
    rank           integer,
    PRIMARY KEY (batch_id, essay_id)
);

CREATE TABLE cj_comparison_pairs (
    id                   bigserial PRIMARY KEY,
    correlation_id       text NOT NULL UNIQUE,
    batch_id             text NOT NULL REFERENCES cj_batches(batch_id) ON DELETE CASCADE,
    iteration            integer NOT NULL,
    essay_a_id           text NOT NULL,
    essay_b_id           text NOT NULL,
    winner               cj_winner,
    confidence           double precision,
    justification        text,
    error_code           text,
    error_details        text,
    http_status          integer,
    provider_request_id  text,
    input_tokens         integer NOT NULL DEFAULT 0,
    output_tokens        integer NOT NULL DEFAULT 0,
    cache_read_tokens    integer NOT NULL DEFAULT 0,
    cache_write_tokens   integer NOT NULL DEFAULT 0,
    cost_usd             double precision NOT NULL DEFAULT 0,
    latency_ms           integer,
    created_at           timestamptz NOT NULL DEFAULT now(),
    completed_at         timestamptz,
    CONSTRAINT ck_cj_pair_distinct CHECK (essay_a_id <> essay_b_id),
    CONSTRAINT ck_cj_error_has_code CHECK (winner IS DISTINCT FROM 'error' OR error_code IS NOT NULL)
);

CREATE INDEX ix_cj_pairs_batch ON cj_comparison_pairs (batch_id);

CREATE INDEX ix_cj_pairs_in_flight ON cj_comparison_pairs (created_at) WHERE winner IS NULL;

CREATE TABLE cj_grade_projections (
    batch_id       text NOT NULL REFERENCES cj_batches(batch_id) ON DELETE CASCADE,
    essay_id       text NOT NULL,
    grade          text NOT NULL,
    probabilities  jsonb NOT NULL,
    confidence     double precision NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, essay_id)
);

CREATE TABLE cj_event_outbox (
    id              text PRIMARY KEY,
    aggregate_id    text NOT NULL,
    aggregate_type  text NOT NULL DEFAULT 'cj_batch',
    event_type      text NOT NULL,
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    attempts        integer NOT NULL DEFAULT 0
);

CREATE UNIQUE INDEX uq_cj_outbox_unpublished ON cj_event_outbox (aggregate_id, event_type)
    WHERE published_at IS NULL;

CREATE VIEW cj_batch_health AS
SELECT b.batch_id,
       s.state,
       b.status,
       b.budget_source,
       s.total_budget,
       s.submitted_comparisons,
       s.completed_comparisons,
       s.failed_comparisons,
       s.submitted_comparisons - s.completed_comparisons - s.failed_comparisons AS in_flight,
       s.current_iteration,
       s.completion_threshold_pct,
       s.completion_reason,
       (SELECT count(*) FROM cj_essays e WHERE e.batch_id = b.batch_id) AS essays,
       (SELECT count(*) FROM cj_essays e WHERE e.batch_id = b.batch_id AND e.is_anchor) AS anchors,
       (SELECT count(*) FROM cj_grade_projections g WHERE g.batch_id = b.batch_id) AS projections,
       (SELECT count(*) FROM cj_event_outbox o WHERE o.aggregate_id = b.batch_id) AS events,
       b.created_at,
       s.last_activity_at,
       extract(epoch FROM now() - b.created_at)::double precision AS age_s,
       extract(epoch FROM now() - s.last_activity_at)::double precision AS idle_s
FROM cj_batches b JOIN cj_batch_states s USING (batch_id);
"""

DOWN = """
DROP VIEW IF EXISTS cj_batch_health;

DROP TABLE IF EXISTS cj_event_outbox, cj_grade_projections, cj_comparison_pairs, cj_essays,
    cj_batch_states, cj_batches;

DROP FUNCTION IF EXISTS cj_guard_batch_state();

DROP TYPE IF EXISTS cj_winner, cj_budget_source, cj_batch_status, cj_batch_state;
"""


def _run(script: str) -> None:
    # One statement per call: asyncpg prepares each statement and a prepared statement holds one command.
    for statement in script.split("\n\n"):
        if statement.strip():
            op.execute(statement)


def upgrade() -> None:
    _run(UP)


def downgrade() -> None:
    _run(DOWN)
