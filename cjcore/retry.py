"""Failure policy: which failed attempts are tried again, and with which pair (pure).

A retryable error is tried again as a new attempt: a new row with its own correlation id, counted as
submitted (DESIGN §3 invariant 1), after a backoff. Failures of the provider or of ours (rate limit,
overload, server error, timeout, lost connection, expiry: TRANSIENT) say nothing about the judge: they are
retried for as long as the budget lasts and the provider makes progress (CJ_PROVIDER_OUTAGE_S, checked by
the coordinator), and never count against its success rate. A malformed answer is the judge's: retried up
to `max_attempts` per chain. The first retry asks the same pair again
(A/B order re-drawn); when that fails too the pair is set aside and the chain moves to a fresh pair, the
most informative unused one. Permanent errors (invalid request, authentication, max_tokens, cancelled)
and malformed answers after the last attempt keep their row and consume budget.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cjcore.contracts import ErrorType, PlannedPair

RETRYABLE = frozenset({
    ErrorType.RATE_LIMIT, ErrorType.OVERLOADED, ErrorType.SERVER_ERROR, ErrorType.TIMEOUT,
    ErrorType.CONNECTION, ErrorType.QUEUE_TIMEOUT, ErrorType.MALFORMED_OUTPUT, ErrorType.UNEXPECTED,
})


# The provider's or our own failures, not the judge's answers (DESIGN §3 invariant 12).
TRANSIENT = frozenset({
    ErrorType.RATE_LIMIT, ErrorType.OVERLOADED, ErrorType.SERVER_ERROR, ErrorType.TIMEOUT,
    ErrorType.CONNECTION, ErrorType.QUEUE_TIMEOUT, ErrorType.UNEXPECTED,
})
# Results that do not count against the judge's success rate.
NOT_JUDGED = TRANSIENT | {ErrorType.CANCELLED}


@dataclass(frozen=True, slots=True)
class Attempt:
    correlation_id: str
    essay_a_id: str
    essay_b_id: str
    attempt: int  # 1 for a planned pair, 2, 3… for its retries


@dataclass(frozen=True, slots=True)
class Retry:
    retry_of: str
    essay_a_id: str
    essay_b_id: str
    attempt: int


def should_retry(error: ErrorType | None, attempt: int, max_attempts: int) -> bool:
    return error in TRANSIENT or (error in RETRYABLE and attempt < max_attempts)


def backoff_s(attempt: int, base_s: float, max_s: float, jitter: float) -> float:
    """Delay before attempt `attempt + 1` of a chain: base × 2^(attempt−1), at most max_s, scaled by
    `jitter` in [0.5, 1] (drawn by the caller) so chains failed together do not retry in step."""
    return min(max_s, base_s * 2 ** max(0, attempt - 1)) * jitter


def plan_retries(
    failed: Sequence[Attempt], budget_left: int, fresh_pairs: Callable[[int], list[PlannedPair]]
) -> list[Retry]:
    """One retry per failed attempt (callers pass only those `should_retry` accepts), at most
    `budget_left`; `fresh_pairs(k)` gives k unused pairs for chains whose pair failed twice."""
    failed = list(failed)[: max(0, budget_left)]
    swap = [f for f in failed if f.attempt >= 2]
    fresh = iter(fresh_pairs(len(swap)) if swap else [])
    out = []
    for f in failed:
        pair = next(fresh, None) if f.attempt >= 2 else None
        if pair is None:  # same pair, a fresh coin for the order
            rng = random.Random(f.correlation_id)
            a, b = (f.essay_a_id, f.essay_b_id) if rng.random() < 0.5 else (f.essay_b_id, f.essay_a_id)
            pair = PlannedPair(a, b)
        out.append(Retry(f.correlation_id, pair.essay_a_id, pair.essay_b_id, f.attempt + 1))
    return out
