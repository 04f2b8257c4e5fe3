"""When a batch stops (DESIGN §3 invariant 4). Called once every result of a round is in.

Rules, first match wins: too few valid results (even at the upper end of the success rate's interval) →
FAILED; reliability at its target → `reliable`; stable scores → `stable`; valid results reach the threshold
share of the denominator → `threshold`; budget spent → `budget`; round limit reached → `max_iterations`.
Otherwise another round.

`reliable` and `stable` judge the ranking, so they count only after a round that added enough new valid
verdicts (a quarter of the batch's essays): a round whose attempts all failed changes no score, and that is
not stability. `reliable` also needs `min_per_essay` valid comparisons per essay, since reliability read
off a handful of verdicts is itself noisy (docs/assessment.md "Completion, retries, pairing and position bias").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cjcore.contracts import Counters, denominator


@dataclass(frozen=True, slots=True)
class Policy:
    threshold_pct: float
    stability_threshold: float
    max_iterations: int
    min_success_rate: float = 0.25
    min_attempts_for_failure: int = 20
    target_reliability: float | None = None
    min_per_essay: float = 4.0  # valid comparisons per essay before `reliable` may stop a batch
    min_new_valid_share: float = 0.25  # new valid verdicts, per essay, for a round to count as evidence


@dataclass(frozen=True, slots=True)
class Decision:
    finalize: bool
    reason: str | None = None
    failed: bool = False


def completion_pct(counters: Counters, n_essays: int, held: int = 0) -> float:
    """Valid results as a percentage of the denominator, never above 100 (invariant 3)."""
    return min(100.0, 100.0 * counters.completed / denominator(counters.total_budget, n_essays, held))


def success_upper(valid: int, attempts: int, z: float = 1.96) -> float:
    """The upper end of the Wilson score interval (95%) of the judge's success rate: what the rate could still
    be, given `valid` of `attempts`."""
    if attempts <= 0:
        return 1.0
    p = valid / attempts
    centre = p + z * z / (2 * attempts)
    spread = z * math.sqrt(p * (1 - p) / attempts + z * z / (4 * attempts * attempts))
    return min(1.0, (centre + spread) / (1 + z * z / attempts))


def failing(counters: Counters, policy: Policy, not_judged: int = 0) -> bool:
    """Enough attempts have come back and too few of them are valid: retrying would only spend money. Judged
    with its uncertainty: only when even the upper end of the success rate's 95% interval is below
    CJ_MIN_SUCCESS_RATE, so one bad round (a burst of malformed answers) is retried, not fatal.
    `not_judged` failures (expired after a crash of ours, cancelled) say nothing about the judge and are
    left out of the rate."""
    attempts = counters.completed + counters.failed - not_judged
    return (attempts >= policy.min_attempts_for_failure and policy.min_success_rate > 0
            and success_upper(counters.completed, attempts) < policy.min_success_rate)


def round_cap(max_iterations: int, total_budget: int, n_essays: int, pairs_per_essay: float) -> int:
    """Rounds a batch may take: CJ_MAX_ITERATIONS, or as many as its budget needs at its round size (and
    two more for retries), whichever is more; a small round size never ends a batch `max_iterations` before
    its budget or target could."""
    size = max(1, math.ceil(n_essays * pairs_per_essay))
    return max(max_iterations, math.ceil(total_budget / size) + 2)


def enough_new(new_valid: int, n_essays: int, policy: Policy) -> bool:
    """The round just scored added enough valid verdicts for its fit to say anything new."""
    return new_valid >= max(1, math.ceil(policy.min_new_valid_share * n_essays))


def decide(
    counters: Counters, n_essays: int, max_change: float | None, policy: Policy, not_judged: int = 0, *,
    new_valid: int, reliability: float | None = None, held: int = 0,
) -> Decision:
    """`new_valid`: valid verdicts recorded since the previous scoring; `reliability`: the fit's; `held`: a
    ruler's anchors in the batch (never paired with each other)."""
    if failing(counters, policy, not_judged):
        return Decision(True, "low_success_rate", failed=True)
    evidence = enough_new(new_valid, n_essays, policy)
    per_essay = 2 * counters.completed / max(1, n_essays)
    if (evidence and policy.target_reliability is not None and reliability is not None
            and reliability >= policy.target_reliability and per_essay >= policy.min_per_essay):
        return Decision(True, "reliable")
    if evidence and max_change is not None and max_change < policy.stability_threshold:
        return Decision(True, "stable")
    if completion_pct(counters, n_essays, held) >= policy.threshold_pct:
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


# A judge's typical information per comparison and spread of essays' scores, as measured on the simulated ENG5
# judge (`bench pairing`: 36 essays with every pair once level off at reliability 0.917–0.925).
TYPICAL_INFORMATION = 0.15  # p(1 − p), averaged over the pairs compared
TYPICAL_SCORE_VARIANCE = 2.2  # logits²


def typical_ceiling(n_essays: int, budget: int) -> float:
    """The reliability a batch of `n_essays` can typically reach with `budget` comparisons (each pair once at
    most): var / (var + SE²) with SE² = 1 / (comparisons per essay × information). A target above it will
    most likely end the batch on its budget or its pairs (`threshold`), not on `reliable`."""
    if n_essays < 2:
        return 0.0
    per_essay = min(2 * budget / n_essays, n_essays - 1)
    se2 = 1 / max(per_essay * TYPICAL_INFORMATION, 1e-9)
    return TYPICAL_SCORE_VARIANCE / (TYPICAL_SCORE_VARIANCE + se2)
