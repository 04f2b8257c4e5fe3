"""ScoringActor: Bradley-Terry fits off the coordinators' event loops.

Ray imports an actor class's module in every process that deserializes a handle to it (each
coordinator holds one), so numpy/scipy are imported inside the actor, not at module level.
"""

from __future__ import annotations

import asyncio
import time

import ray

from actors import metrics
from cjcore.contracts import Comparison
from cjcore.scores import BTFit


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class ScoringActor:
    async def __init__(self, namespace: str):  # type: ignore[misc]  # Ray awaits async constructors
        from cjcore import bradley_terry

        self._bt = bradley_terry
        metrics.configure(namespace)

    async def fit(
        self, essay_ids: list[str], comparisons: list[Comparison], alpha: float,
        fixed: dict[str, tuple[float, float]] | None = None,
    ) -> BTFit:
        # In a thread, off the actor's event loop: a large batch's fit (~0.25 s at 2,000 essays) does not hold
        # up the other batches' fits meanwhile (numpy's and scipy's linear algebra release the GIL).
        started = time.perf_counter()
        result = await asyncio.to_thread(self._bt.fit, essay_ids, comparisons, alpha, fixed)
        metrics.observe("cj_bt_fit_seconds", time.perf_counter() - started)
        return result

    async def restarted(self) -> bool:
        """Whether this is a restarted incarnation (Ray restarts the actor after a crash or kill)."""
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)

    async def split_half(
        self, essay_ids: list[str], comparisons: list[Comparison], alpha: float,
        fixed: dict[str, tuple[float, float]] | None = None, seed: int = 0,
    ) -> float | None:
        """Once per batch, at the end: up to 16 fits of half the data, in a thread like `fit`."""
        return await asyncio.to_thread(self._bt.split_half, essay_ids, comparisons, alpha, fixed, seed=seed)
