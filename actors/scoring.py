"""ScoringActor: Bradley-Terry fits off the coordinators' event loops."""

from __future__ import annotations

import ray

from cjcore import bradley_terry
from cjcore.bradley_terry import BTFit
from cjcore.contracts import Comparison


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class ScoringActor:
    def fit(self, essay_ids: list[str], comparisons: list[Comparison], alpha: float) -> BTFit:
        return bradley_terry.fit(essay_ids, comparisons, alpha)

    def ping(self) -> bool:
        return True
