"""`launch.py bench`: end-to-end time of a 24-essay, 100-comparison batch on a zero-latency simulated
judge, and the finalize lag (last result → COMPLETED) of that batch and of a 4-essay one (the batch the
predecessor left waiting four minutes for a sweep). Timings live here, never in pass/fail tests."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from cjcore.sample import eng5_request, eng5_truth
from cjcore.settings import Settings
from simprovider.server import SimConfig


async def _one(client: Any, request: dict[str, Any]) -> dict[str, float]:
    t0 = time.monotonic()
    batch_id = await client.submit(request)
    result = await client.wait(batch_id, poll_s=0.02)
    wall = time.monotonic() - t0
    lag = await client.metrics.finalize_lag(batch_id)
    done = result.counters.completed + result.counters.failed
    return {"wall_s": wall, "comparisons": done, "per_s": done / wall, "finalize_lag_s": lag}


def run_bench(args: argparse.Namespace, settings: Settings, local_stack: Any) -> dict[str, Any]:
    from driver.api import CJClient

    request = eng5_request()
    request.update(max_comparisons=100, completion_threshold_pct=100, pair_generation_seed=1)
    # Spend the whole budget; the simulated judge has no rate limit here, so neither does the pool: this
    # measures the orchestration, not the limiter.
    settings = settings.model_copy(update={"score_stability_threshold": 1e-9, "requests_per_minute": 10**7,
                                           "tokens_per_minute": 10**10})
    with local_stack(settings, SimConfig(truth=eng5_truth(), noise=0.5, seed=1)) as (settings, _):
        small = {"essays": [{"essay_id": f"s{i}", "text": f"A short essay, number {i}."} for i in range(4)],
                 "max_comparisons": 350}

        async def run() -> tuple[list[dict[str, float]], list[dict[str, float]]]:
            async with CJClient(settings) as client:
                await _one(client, request)  # warm-up: actor processes, connections
                big = [await _one(client, request) for _ in range(args.runs)]
                return big, [await _one(client, small) for _ in range(args.runs)]

        runs, small_runs = asyncio.run(run())
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {
        "bench": "e2e: 24 essays, 100 comparisons, zero-latency simulated judge",
        "runs": args.runs,
        "wall_s_median": round(med["wall_s"], 3),
        "wall_s_min": round(min(r["wall_s"] for r in runs), 3),
        "comparisons_per_s_median": round(med["per_s"], 1),
        "finalize_lag_s_median": round(med["finalize_lag_s"], 4),
        "four_essays_wall_s_median": round(statistics.median(r["wall_s"] for r in small_runs), 3),
        "four_essays_last_result_to_completed_s_median": round(
            statistics.median(r["finalize_lag_s"] for r in small_runs), 4),
        "four_essays_last_result_to_completed_s_max": round(max(r["finalize_lag_s"] for r in small_runs), 4),
    }


# --------------------------------------------------------------------------------------------------
# bench ratelimit: this system against the baseline a user would write, on one rate-limited server


def _share(sim: Any, rpm: int, tpm: int) -> dict[str, float]:
    """Steady-state use of each limit: requests and input tokens the server admitted in the middle half
    of the run (between the 25th and 75th percentile of admissions), per minute, as a share of the limit.
    The ends are left out: both systems start with the server's stored allowance and end with a tail."""
    adm = list(sim.admissions)
    lo, hi = len(adm) // 4, 3 * len(adm) // 4
    minutes = max(1e-9, (adm[hi][0] - adm[lo][0]) / 60)
    req = (hi - lo) / minutes / rpm
    tok = sum(c for _, c in adm[lo:hi]) / minutes / tpm
    return {"requests_share": round(req, 3), "input_tokens_share": round(tok, 3),
            "binding_share": round(max(req, tok), 3)}


def _workload(n: int, seed: int) -> list[Any]:
    import random

    from cjcore.contracts import ComparisonRequest

    request = eng5_request()
    texts = {e["essay_id"]: e["text"] for e in request["essays"]}
    ids = sorted(texts)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.sample(ids, 2)
        out.append(ComparisonRequest(f"bench-{i}", "bench", a, b, texts[a], texts[b], request["instructions"],
                                     BENCH_MODEL, 0.0, 512))
    return out


# Sonnet 4.5 caches prefixes from 1,024 tokens, so the ENG5 marking scheme (~1,400 tokens with the tool
# definition) is cacheable; Haiku 4.5 needs 4,096.
BENCH_MODEL = "claude-sonnet-4-5"


async def _baseline(base_url: str, workload: list[Any], concurrency: int, cached: bool) -> tuple[float, int, int]:
    """asyncio.gather over AsyncAnthropic with a semaphore and the SDK's default retries (2, honouring
    retry-after); requests that still fail are sent again in another pass until every one has an answer.
    `cached=False` sends the instructions as a plain system string, as a user would write it.
    Returns wall seconds, passes, and requests that failed a pass."""
    import anthropic

    from cjcore.prompt import message_params

    client = anthropic.AsyncAnthropic(api_key="sk-baseline", base_url=base_url)
    sem = asyncio.Semaphore(concurrency)

    async def one(req: Any) -> bool:
        params = message_params(req)
        if not cached:
            params["system"] = req.instructions
        async with sem:
            try:
                await client.messages.create(**params)
                return True
            except anthropic.APIError:
                return False

    started = time.monotonic()
    pending, passes, failed = list(workload), 0, 0
    while pending:
        passes += 1
        ok = await asyncio.gather(*(one(r) for r in pending))
        pending = [r for r, good in zip(pending, ok, strict=True) if not good]
        failed += len(pending)
    await client.close()
    return time.monotonic() - started, passes, failed


def run_ratelimit_bench(args: argparse.Namespace, settings: Settings, local_stack: Any) -> dict[str, Any]:
    from driver.api import CJClient

    rpm, tpm, initial_s = args.rpm, args.tpm, 1.0  # a busy key: no stored burst, the run is steady state
    n_batches = args.batches
    per_batch = args.requests // n_batches
    sim_config = SimConfig(truth=eng5_truth(), noise=0.5, seed=1, rpm=rpm, tpm=tpm, latency_ms=args.latency_ms,
                           initial_s=initial_s)
    settings = settings.model_copy(update={"requests_per_minute": rpm, "tokens_per_minute": tpm,
                                           "score_stability_threshold": 1e-9})
    report: dict[str, Any] = {"bench": "ratelimit", "limit_rpm": rpm, "limit_input_tpm": tpm,
                              "requests": n_batches * per_batch, "latency_ms": args.latency_ms}
    with local_stack(settings, sim_config) as (settings, sim):
        request = eng5_request()
        request.update(max_comparisons=per_batch, completion_threshold_pct=100,
                       llm={"model": BENCH_MODEL, "max_tokens": 512})

        async def system() -> tuple[float, int, dict[str, int]]:
            async with CJClient(settings) as client:
                started = time.monotonic()
                ids = await asyncio.gather(*(client.submit(dict(request)) for _ in range(n_batches)))
                results = await asyncio.gather(*(client.wait(b, poll_s=0.2) for b in ids))
                wall = time.monotonic() - started
                report["this_system_first_request_after_s"] = round(sim.arrivals[0] - started, 2)
                report["this_system_done_after_last_request_s"] = round(started + wall - sim.arrivals[-1], 2)
                errors: dict[str, int] = {}
                for b in ids:
                    for code, n in (await client.reads.inspect(b))["errors_by_code"].items():
                        errors[code] = errors.get(code, 0) + n
                return wall, sum(r.counters.failed for r in results), errors

        sim.configure()  # fresh buckets
        sim.reset_stats()
        wall, failed, errors = asyncio.run(system())
        report["this_system"] = {"wall_s": round(wall, 1), "failed": failed, "errors": errors,
                                 "http_429": sim.stats["rate_limited"],
                                 "http_429_share": round(sim.stats["rate_limited"] / sim.stats["requests"], 4),
                                 **_share(sim, rpm, tpm)}

        base_url = f"http://127.0.0.1:{sim.port}"
        for name, cached in (("baseline", False), ("baseline_with_cache_marker", True)):
            sim.configure()
            sim.reset_stats()
            wall, passes, failed = asyncio.run(_baseline(base_url, _workload(n_batches * per_batch, 1),
                                                         args.concurrency, cached))
            report[name] = {"wall_s": round(wall, 1), "http_429": sim.stats["rate_limited"],
                            "http_429_share": round(sim.stats["rate_limited"] / sim.stats["requests"], 4),
                            "passes": passes, "failed_after_sdk_retries": failed,
                            "concurrency": args.concurrency, **_share(sim, rpm, tpm)}
    for name in ("baseline", "baseline_with_cache_marker"):
        report[f"wall_ratio_{name}_over_system"] = round(report[name]["wall_s"] / report["this_system"]["wall_s"], 2)
    return report
