"""`launch.py bench throughput`: how many comparisons a second the path coordinator → worker → storage
carries with a zero-latency simulated judge and no rate limit, every result persisted, and where the
CPU goes (seconds per process group, sampled with psutil while the load runs)."""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections import defaultdict
from typing import Any

from benches.processes import ProcessGroups
from cjcore.sample import eng5_truth
from cjcore.settings import Settings
from simprovider.server import SimConfig


class CpuSampler:
    """CPU seconds per process group between start and stop. Processes that start and end in between
    (coordinators) are counted from zero up to their last sample (every `every_s`)."""

    def __init__(self, every_s: float = 0.5):
        import psutil

        self._psutil = psutil
        self._every = every_s
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._groups = ProcessGroups()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, initial: bool) -> None:
        for proc in self._psutil.process_iter():
            group = self._groups.of(proc)
            if group is None:
                continue
            try:
                t = proc.cpu_times()
            except self._psutil.Error:
                continue
            cpu = t.user + t.system
            if initial:
                self._first[proc.pid] = cpu
            self._last[proc.pid] = (group, cpu)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._sample(False)

    def start(self) -> None:
        self._sample(True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample(False)
        out: dict[str, float] = defaultdict(float)
        for pid, (group, cpu) in self._last.items():
            out[group] += cpu - self._first.get(pid, 0.0)
        return dict(out)


def throughput_request(students: int, budget: int, seed: int) -> dict[str, Any]:
    from benches.loadtest import eng5_shaped

    request = eng5_shaped(students)
    request.update(max_comparisons=budget, completion_threshold_pct=100, pair_generation_seed=seed)
    return request


def run_throughput_bench(args: argparse.Namespace, settings: Settings, local_stack: Any) -> dict[str, Any]:
    from driver.api import CJClient

    settings = settings.model_copy(update={
        "provider_mode": args.mode, "workers": args.workers,
        # No rate limit and a judge that answers at once: this measures the orchestration.
        "requests_per_minute": 10**8, "tokens_per_minute": 10**11,
        "score_stability_threshold": 1e-9,  # spend every budget: a fixed amount of work
        "pairs_per_essay_per_round": args.pairs_per_essay,
        "max_iterations": 1000,
    })
    total = args.batches * args.budget
    with local_stack(settings, SimConfig(truth=eng5_truth(), noise=0.5, seed=1)) as (settings, sim):

        async def run() -> dict[str, Any]:
            async with CJClient(settings) as client:
                # Warm-up: actor processes, connections, imports.
                await client.wait(await client.submit(throughput_request(args.students, 60, 0)), poll_s=0.05)
                sim.reset_stats()
                sampler = CpuSampler()
                sampler.start()
                started = time.monotonic()
                ids = await asyncio.gather(*(client.submit(throughput_request(args.students, args.budget, i + 1))
                                             for i in range(args.batches)))
                submitted = time.monotonic() - started
                results = await asyncio.gather(*(client.wait(b, poll_s=0.5, timeout_s=args.timeout) for b in ids))
                wall = time.monotonic() - started
                cpu = sampler.stop()
                span = await client.metrics.pair_span(ids)
                bad = {b: v for b in ids if (v := await client.metrics.check_invariants(b))}
                return {"results": results, "wall": wall, "submitted_s": submitted, **span, "cpu": cpu,
                        "invariant_violations": bad}

        out = asyncio.run(run())
    results = out["results"]
    done = sum(r.counters.completed + r.counters.failed for r in results)
    cpu = out["cpu"]
    cpu_total = sum(cpu.values())
    return {
        "bench": f"throughput: {args.batches} ENG5 batches × {args.budget} comparisons "
                 f"(12 anchors + {args.students} students), zero-latency judge, no rate limit",
        "provider_mode": args.mode,
        "workers": args.workers,
        "comparisons": done,
        "rows_persisted": out["rows"],
        "results_persisted": out["answered"],
        "all_persisted": out["answered"] == out["rows"] == done == total,
        "completed_batches": sum(r.state.value == "COMPLETED" for r in results),
        "invariants_ok": not out["invariant_violations"],
        "wall_s": round(out["wall"], 2),
        "all_coordinators_up_s": round(out["submitted_s"], 2),
        "comparisons_per_s": round(done / out["wall"], 1),
        "comparisons_per_s_first_row_to_last_result": round(out["answered"] / out["span"], 1),
        "provider_calls": sim.stats["batches"] if args.mode == "batches" else sim.stats["requests"],
        "cpu_s_total": round(cpu_total, 1),
        "cpu_cores_busy": round(cpu_total / out["wall"], 2),
        "where_the_time_goes": {
            g: {"cpu_s": round(s, 2), "ms_per_comparison": round(1000 * s / max(1, done), 3),
                "share": round(s / cpu_total, 3)}
            for g, s in sorted(cpu.items(), key=lambda kv: -kv[1])
        },
    }
