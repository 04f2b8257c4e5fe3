"""`launch.py bench`: end-to-end time of a 24-essay, 100-comparison batch on a zero-latency simulated
judge, and the finalize lag (last result → COMPLETED). Timings live here, never in pass/fail tests."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from sqlalchemy import text

from cjcore.sample import eng5_request, eng5_truth
from cjcore.settings import Settings
from simprovider.server import SimConfig


async def _one(client: Any, request: dict[str, Any]) -> dict[str, float]:
    t0 = time.monotonic()
    batch_id = await client.submit(request)
    result = await client.wait(batch_id, poll_s=0.02)
    wall = time.monotonic() - t0
    async with client.repo.engine.connect() as conn:
        lag = (await conn.execute(text(
            "SELECT extract(epoch FROM b.finished_at - max(p.completed_at)) FROM cj_batches b "
            "JOIN cj_comparison_pairs p USING (batch_id) WHERE b.batch_id = :b GROUP BY b.finished_at"
        ), {"b": batch_id})).scalar_one()
    done = result.counters.completed + result.counters.failed
    return {"wall_s": wall, "comparisons": done, "per_s": done / wall, "finalize_lag_s": float(lag)}


def run_bench(args: argparse.Namespace, settings: Settings, local_stack: Any) -> dict[str, Any]:
    from driver.api import CJClient

    request = eng5_request()
    request.update(max_comparisons=100, completion_threshold_pct=100, pair_generation_seed=1)
    settings = settings.model_copy(update={"score_stability_threshold": 1e-9})  # spend the whole budget
    with local_stack(settings, SimConfig(truth=eng5_truth(), noise=0.5, seed=1)) as (settings, _):
        async def run() -> list[dict[str, float]]:
            client = CJClient(settings)
            try:
                await _one(client, request)  # warm-up: actor processes, connections
                return [await _one(client, request) for _ in range(args.runs)]
            finally:
                await client.close()

        runs = asyncio.run(run())
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {
        "bench": "e2e: 24 essays, 100 comparisons, zero-latency simulated judge",
        "runs": args.runs,
        "wall_s_median": round(med["wall_s"], 3),
        "wall_s_min": round(min(r["wall_s"] for r in runs), 3),
        "comparisons_per_s_median": round(med["per_s"], 1),
        "finalize_lag_s_median": round(med["finalize_lag_s"], 4),
    }
