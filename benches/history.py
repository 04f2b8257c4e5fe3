"""`launch.py bench history`: what a `/metrics` scrape and a Supervisor sweep cost with a small and a large
history of finished batches (invariant 14: that work must not grow with finished history).

For each history size a fresh database (in the scratch PostgreSQL) is migrated and filled in bulk with finished
ENG5-sized batches (24 essays, 12 of them anchors, 100 comparison rows, 12 grade projections and one published
event each; their figures added to `cj_finished_totals` as their final transactions would have), plus the same
50 batches in progress (60 rows each, 30 still waiting for a result); then VACUUM ANALYZE, as autovacuum would
have done. Timed, median of `--runs`: the scrape's query (`MetricsQueries.metrics_snapshot`), the scrape's
query as it was before (a full scan of the comparison rows and of `cj_batch_health`), and one sweep's queries
(`SupervisionQueries`: live, idle and stuck work, missing events, missing projections).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from cjcore.settings import Settings

PAIRS_PER_BATCH = 100
LIVE_BATCHES = 50

# The scrape's query before finished totals: every comparison row and every batch's health, at every scrape.
SCRAPE_BEFORE = """
SELECT coalesce(sum(submitted_comparisons), 0), coalesce(sum(completed_comparisons), 0),
       count(*) FILTER (WHERE state NOT IN ('QUEUED', 'COMPLETED', 'FAILED', 'CANCELLED')
                          AND last_activity_at < now() - make_interval(secs => 120)),
       p.expired, p.retried,
       (SELECT count(*) FROM cj_event_outbox WHERE published_at IS NULL),
       (SELECT count(*) FROM cj_batch_health WHERE state = 'COMPLETED' AND anchors > 0 AND essays > anchors
                                              AND projections = 0)
  FROM cj_batch_states,
       (SELECT count(*) FILTER (WHERE error_code = 'QUEUE_TIMEOUT') AS expired,
               count(*) FILTER (WHERE retry_of IS NOT NULL) AS retried FROM cj_comparison_pairs) AS p
 GROUP BY p.expired, p.retried"""

FILL = [
    """INSERT INTO cj_batches (batch_id, status, original_request, budget_source, created_at, finished_at,
                               ray_namespace)
       SELECT :prefix || g, :status, '{}', 'runner_override', now() - interval '30 days',
              CASE WHEN :finished THEN now() - interval '30 days' END, 'cj'
         FROM generate_series(1, :n) g""",
    """INSERT INTO cj_batch_states (batch_id, state, total_budget, submitted_comparisons, completed_comparisons,
                                    current_iteration, completion_threshold_pct, completion_reason, last_activity_at)
       SELECT :prefix || g, :state, :per, :per, :done, 2, 95, CASE WHEN :finished THEN 'budget' END,
              CASE WHEN :finished THEN now() - interval '30 days' ELSE now() END
         FROM generate_series(1, :n) g""",
    """INSERT INTO cj_essays (batch_id, essay_id, position, text, text_sha256, is_anchor, known_grade)
       SELECT :prefix || g, 'e' || e, e, 'An essay, number ' || e, md5(e::text), e <= 12,
              CASE WHEN e <= 12 THEN (ARRAY['F','E','D','C','B','A'])[(e + 1) / 2] END
         FROM generate_series(1, :n) g, generate_series(1, 24) e""",
    """INSERT INTO cj_comparison_pairs (correlation_id, batch_id, iteration, essay_a_id, essay_b_id, winner,
                                        input_tokens, output_tokens, created_at, completed_at)
       SELECT :prefix || g || '-' || k, :prefix || g, 1 + k / 30, 'e' || (k % 24 + 1), 'e' || ((k + 7) % 24 + 1),
              CASE WHEN k < :done THEN 'essay_a'::cj_winner END, 900, 50,
              CASE WHEN :finished THEN now() - interval '30 days' ELSE now() END,
              CASE WHEN k < :done THEN now() END
         FROM generate_series(1, :n) g, generate_series(0, :per - 1) k""",
]
FINISHED_ONLY = [
    """INSERT INTO cj_grade_projections (batch_id, essay_id, grade, probabilities, confidence)
       SELECT :prefix || g, 'e' || e, 'C', '{"C": 0.7}', 0.7
         FROM generate_series(1, :n) g, generate_series(13, 24) e""",
    """INSERT INTO cj_event_outbox (id, aggregate_id, event_type, payload, published_at)
       SELECT gen_random_uuid()::text, :prefix || g, 'cj.batch.completed', '{}', now() FROM generate_series(1, :n) g""",
    """UPDATE cj_finished_totals SET completed_batches = completed_batches + :n, submitted = submitted + :n * :per,
                                      completed = completed + :n * :per WHERE id = 1""",
]


async def _fill(engine: Any, prefix: str, n: int, per: int, finished: bool) -> None:
    params = {"prefix": prefix, "n": n, "per": per, "finished": finished,
              "status": "COMPLETED" if finished else "ACTIVE",
              "state": "COMPLETED" if finished else "WAITING_CALLBACKS",
              "done": per if finished else per // 2}
    async with engine.begin() as conn:
        for sql in FILL + (FINISHED_ONLY if finished else []):
            await conn.execute(text(sql), params)


async def _median_s(runs: int, call: Callable[[], Awaitable[Any]]) -> float:
    await call()  # warm: plans and the cache
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 4)


async def _one(url: str, finished_batches: int, runs: int) -> dict[str, Any]:
    from storage.database import make_engine
    from storage.metrics import MetricsQueries
    from storage.migrate import upgrade
    from storage.supervision import SupervisionQueries

    admin = make_engine(url, pool_size=1)
    name = f"cj_history_{finished_batches}"
    async with admin.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        await conn.execute(text(f"CREATE DATABASE {name}"))
    await admin.dispose()
    engine = make_engine(make_url(url).set(database=name).render_as_string(hide_password=False), pool_size=2)
    try:
        await upgrade(engine)
        started = time.monotonic()
        await _fill(engine, "hist-", finished_batches, PAIRS_PER_BATCH, True)
        await _fill(engine, "live-", LIVE_BATCHES, 60, False)
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE"))
            rows = (await conn.execute(text("SELECT count(*) FROM cj_comparison_pairs"))).scalar_one()
        fill_s = time.monotonic() - started
        metrics, sweep = MetricsQueries(engine), SupervisionQueries(engine)

        async def before() -> None:
            async with engine.connect() as conn:
                await conn.execute(text(SCRAPE_BEFORE))

        async def one_sweep() -> None:
            await sweep.active_batch_ids("cj")
            await sweep.idle_batch_ids(120.0, "cj")
            await sweep.stuck_pairs(300.0, "cj")
            await sweep.repair_missing_events()
            await sweep.completed_without_projections()

        return {"finished_batches": finished_batches, "comparison_rows": rows, "fill_s": round(fill_s, 1),
                "scrape_s": await _median_s(runs, lambda: metrics.metrics_snapshot(120.0)),
                "scrape_before_s": await _median_s(runs, before),
                "sweep_s": await _median_s(runs, one_sweep)}
    finally:
        await engine.dispose()


def run_history_bench(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from driver.runtime import resolve_database

    settings = resolve_database(settings)
    assert settings.database_url
    sizes = [100, args.batches or 10_000]
    table = [asyncio.run(_one(settings.database_url_value(), n, args.runs)) for n in sizes]
    return {"bench": "history: a scrape's and a sweep's queries against finished history (median seconds)",
            "runs": args.runs, "live_batches": LIVE_BATCHES, "table": table}
