"""When a batch stops (DESIGN §3 invariant 4). Called once every result of a round is in.

Rules, first match wins: too few valid results → FAILED; stable scores → `stable`; valid results reach
the threshold share of the denominator → `threshold`; budget spent → `budget`; round limit reached →
`max_iterations`. Otherwise another round.
"""

from __future__ import annotations

from dataclasses import dataclass

from cjcore.contracts import Counters, denominator


@dataclass(frozen=True, slots=True)
class Policy:
    threshold_pct: float
    stability_threshold: float
    max_iterations: int
    min_success_rate: float = 0.25
    min_attempts_for_failure: int = 20


@dataclass(frozen=True, slots=True)
class Decision:
    finalize: bool
    reason: str | None = None
    failed: bool = False


def completion_pct(counters: Counters, n_essays: int) -> float:
    """Valid results as a percentage of the denominator, never above 100 (invariant 3)."""
    return min(100.0, 100.0 * counters.completed / denominator(counters.total_budget, n_essays))


def failing(counters: Counters, policy: Policy, not_judged: int = 0) -> bool:
    """Enough attempts have come back and too few of them are valid: retrying would only spend money.
    `not_judged` failures (expired after a crash of ours, cancelled) say nothing about the judge and are
    left out of the rate."""
    attempts = counters.completed + counters.failed - not_judged
    return attempts >= policy.min_attempts_for_failure and counters.completed < policy.min_success_rate * attempts


def decide(
    counters: Counters, n_essays: int, max_change: float | None, policy: Policy, not_judged: int = 0
) -> Decision:
    if failing(counters, policy, not_judged):
        return Decision(True, "low_success_rate", failed=True)
    if max_change is not None and counters.completed > 0 and max_change < policy.stability_threshold:
        return Decision(True, "stable")
    if completion_pct(counters, n_essays) >= policy.threshold_pct:
        return Decision(True, "threshold")
    if counters.submitted >= counters.total_budget:
        return Decision(True, "budget")
    if counters.iterations >= policy.max_iterations:
        return Decision(True, "max_iterations")
    return Decision(False)


def provider_out(failing_since: float | None, now: float, outage_s: float) -> bool:
    """The provider has made no progress for `outage_s`: every result since `failing_since` was a transient
    failure (None: the latest answer was the judge's, so the provider is working)."""
    return failing_since is not None and now - failing_since >= outage_s
