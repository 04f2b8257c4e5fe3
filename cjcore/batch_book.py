"""One batch's round bookkeeping, the state machine a coordinator runs (pure: no Ray, no database).

What it keeps: the attempts in flight and the pairs tried; the failed attempts still owed a retry and when
each falls due (backoff with jitter); the provider-outage clock (since when every answer was a transient
failure); the valid verdicts seen and how many were new since the last fit. What it decides: the next
round's pairs, the retries due now, whether the provider is out, whether to stop after a fit (with
`cjcore.completion`), and the typed metadata a round records. The coordinator around it only persists and
routes: every counter it is given comes from the database (the rows' own counts), never from here.

`benches/pairing.py` runs the same book against a simulated judge, so the bench measures the loop the
coordinator runs.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cjcore import pairing
from cjcore.batch_metadata import BatchMetadata, CompletionMeta
from cjcore.completion import Decision, Policy, completion_pct, decide, failing, provider_out
from cjcore.contracts import (
    Comparison,
    Counters,
    ErrorType,
    PlannedPair,
    PositionOut,
    ReliabilityOut,
    Winner,
    denominator,
    usable_pairs,
)
from cjcore.retry import NOT_JUDGED, TRANSIENT, Attempt, Retry, backoff_s, plan_retries, should_retry
from cjcore.scores import BTFit, max_score_change, position_wins

# Why a batch stopped short of its target reliability, said in its result.
UNREACHED = {"threshold": "the completion threshold of min(budget, pairs) was reached",
             "budget": "the budget was spent", "max_iterations": "the round cap was reached",
             "stable": "the scores stopped changing"}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the book needs of a recorded result."""

    correlation_id: str
    winner: Winner
    error_type: ErrorType | None = None
    retry_after_s: float | None = None  # the provider's own wait before the retry (429, 529)


@dataclass(frozen=True, slots=True)
class Scored:
    """A round's fit judged: the stop decision, its inputs, and the metadata the round records."""

    decision: Decision
    change: float | None
    new_valid: int
    meta: BatchMetadata


@dataclass
class BatchBook:
    batch_id: str
    essay_ids: list[str]
    policy: Policy
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    held: frozenset[str] = frozenset()
    seed: int | None = None
    pairs_per_essay: float = 1.0
    # A round may be scored (and the next one sent) with at most this share of its pairs still out: its tail
    # lands during the next round. 0: every result first (a batch finalizes only with nothing out, always).
    tail_pct: float = 0.0
    round_sent: int = 0  # pairs sent in the latest round (0 after an activation: that round waits for all)
    not_judged: int = 0  # results that say nothing of the judge (transient, cancelled)
    valid_at_fit: int = 0  # valid verdicts at the last scoring
    in_flight: dict[str, Attempt] = field(default_factory=dict)
    attempted: Counter[pairing.Key] = field(default_factory=Counter)
    owed: list[Attempt] = field(default_factory=list)  # failed attempts of this round still to retry
    due: dict[str, float] = field(default_factory=dict)  # correlation id → when its retry falls due
    failing_since: float | None = None  # every answer since then was a transient failure
    valid: list[Comparison] | None = field(default_factory=list)  # None: unknown here (read before scoring)
    last_scores: dict[str, float] = field(default_factory=dict)
    last_ses: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._jitter = random.Random(self.batch_id)

    # -- what to send ---------------------------------------------------------------------------------

    def plan_round(self, counters: Counters) -> list[PlannedPair]:
        """The next round's pairs: the first round a connected design, later ones the most informative unused
        pairs for the current fit; as many as the round size, the budget and the unused pairs allow."""
        n = len(self.essay_ids)
        unused = usable_pairs(n, len(self.held)) - len(self.attempted)
        size = pairing.round_size(n, self.pairs_per_essay, counters.total_budget - counters.submitted, unused)
        rng = pairing.round_rng(self.seed, self.batch_id, counters.iterations + 1)
        if not self.attempted:
            return pairing.first_round(self.essay_ids, size, rng, self.held)
        return pairing.next_round(self.essay_ids, self.attempted, self.last_scores, self.last_ses, size, rng,
                                  self.held)

    def sent(self, rows: Sequence[Attempt], *, new_round: bool = False) -> None:
        """These attempts' rows (a new round's, or retries) are committed and on their way."""
        if new_round:
            self.round_sent = len(rows)
        for r in rows:
            self.attempted[pairing.pair_key(r.essay_a_id, r.essay_b_id)] += 1
            self.in_flight[r.correlation_id] = r

    def take_due(self, now: float) -> tuple[list[Attempt], float | None]:
        """The owed retries whose backoff is over (taken off the book), and in how many seconds the next of the
        rest falls due (None: nothing left owed)."""
        ready = [a for a in self.owed if self.due.get(a.correlation_id, 0.0) <= now]
        self.owed = [a for a in self.owed if self.due.get(a.correlation_id, 0.0) > now]
        for a in ready:
            self.due.pop(a.correlation_id, None)
        wait = min(self.due[a.correlation_id] for a in self.owed) - now if self.owed else None
        return ready, wait

    def retries(self, owed: Sequence[Attempt], counters: Counters) -> list[Retry]:
        """New attempts for `owed`, within the budget left; none once the judge is failing (retrying would only
        spend money)."""
        if failing(counters, self.policy, self.not_judged):
            return []

        def fresh(k: int) -> list[PlannedPair]:
            rng = random.Random(f"{self.batch_id}:{counters.submitted}")
            return pairing.next_round(self.essay_ids, self.attempted, self.last_scores, self.last_ses, k, rng,
                                      self.held)

        return plan_retries(owed, counters.total_budget - counters.submitted, fresh)

    def drop_owed(self) -> None:
        """Ending early: nothing more is retried."""
        self.owed.clear()
        self.due.clear()

    # -- what comes back ------------------------------------------------------------------------------

    def record(self, outcomes: Iterable[Outcome], now: float, *, retry: bool = True) -> int:
        """Results just recorded (each for the first time, by the database's answer); returns how many were
        attempts in flight here. Failed ones that may be retried are owed (when `retry`), transient ones after
        a jittered backoff and never before the provider's `retry-after`; the outage clock starts at the first
        transient failure and stops at any answer of the judge's."""
        new = 0
        for r in outcomes:
            attempt = self.in_flight.pop(r.correlation_id, None)
            if attempt is None:  # handled at an earlier delivery, or a row this activation did not send
                if r.winner is not Winner.ERROR:
                    self.valid = None  # reread the verdicts before the next fit
                continue
            new += 1
            if r.error_type in NOT_JUDGED:
                self.not_judged += 1
            if r.error_type in TRANSIENT:
                self.failing_since = self.failing_since if self.failing_since is not None else now
            elif r.error_type is not ErrorType.CANCELLED:
                self.failing_since = None  # the judge answered: the provider is working
            if r.winner in (Winner.ESSAY_A, Winner.ESSAY_B) and self.valid is not None:
                self.valid.append(Comparison(attempt.essay_a_id, attempt.essay_b_id, r.winner))
            if retry and should_retry(r.error_type, attempt.attempt, self.retry.max_attempts):
                self.owed.append(attempt)
                if r.error_type in TRANSIENT:
                    self.due[attempt.correlation_id] = now + max(r.retry_after_s or 0.0, backoff_s(
                        attempt.attempt, self.retry.backoff_s, self.retry.backoff_max_s,
                        0.5 + self._jitter.random() / 2))
        return new

    def round_in(self) -> bool:
        """Whether the round may be scored now: nothing owed, and nothing out, or no more than its tail (the
        verdicts known here, so none need reading back while results land). With exponential latencies the
        slowest of 150 answers takes ~5.6× the mean; without the tail every round waited for it."""
        if self.owed:
            return False
        tail = int(self.tail_pct / 100 * self.round_sent)
        return not self.in_flight or (self.valid is not None and len(self.in_flight) <= tail)

    def provider_out(self, now: float, outage_s: float) -> bool:
        return provider_out(self.failing_since, now, outage_s)

    # -- after a round ------------------------------------------------------------------------------

    def judge(self, fit: BTFit, counters: Counters, comparisons: Sequence[Comparison],
              threshold_pct: float) -> Scored:
        """The stop decision for this fit, and the metadata the round records (typed keys, DESIGN §4.2)."""
        n, k = len(self.essay_ids), len(self.held)
        change = max_score_change(self.last_scores, fit.score_of())
        new_valid = counters.completed - self.valid_at_fit
        decision = decide(counters, n, change, self.policy, self.not_judged, new_valid=new_valid,
                          reliability=fit.ssr, held=k)
        a_wins, b_wins = position_wins(comparisons)
        meta = BatchMetadata(
            reliability=ReliabilityOut(ssr=round(fit.ssr, 4), comparisons_per_essay=round(2 * fit.n_comparisons / n, 2),
                                       target=self.policy.target_reliability),
            position=PositionOut(a_wins=a_wins, b_wins=b_wins, bias_logit=round(fit.position_bias, 4),
                                 bias_se=round(fit.position_bias_se, 4)),
            completion=CompletionMeta(
                denominator=denominator(counters.total_budget, n, k), threshold_pct=threshold_pct,
                completion_pct=round(completion_pct(counters, n, k), 2),
                stability_threshold=self.policy.stability_threshold,
                last_max_change=None if change is None else round(change, 4),
                new_valid=new_valid, valid_at_fit=counters.completed),
            held=sorted(self.held),
        )
        target = self.policy.target_reliability
        if decision.finalize and not decision.failed and target is not None and fit.ssr < target:
            assert meta.reliability is not None
            meta.reliability.target_unreached = UNREACHED.get(decision.reason or "", decision.reason)
        if decision.failed:
            judged = counters.completed + counters.failed - self.not_judged
            meta.error = (f"valid results {counters.completed} of {judged} judged attempts, below "
                          f"CJ_MIN_SUCCESS_RATE {self.policy.min_success_rate:g}")
        return Scored(decision, change, new_valid, meta)

    def fitted(self, fit: BTFit, counters: Counters) -> None:
        """The round's fit is stored: the next round pairs from it, and counts new verdicts from here."""
        self.last_scores, self.last_ses = fit.score_of(), fit.se_of()
        self.valid_at_fit = counters.completed

    def passivatable(self) -> bool:
        """Nothing to do but wait for results: nothing owed, and the outage clock not running (it lives here
        only, so a batch whose provider is failing stays in memory)."""
        return bool(self.in_flight) and not self.owed and self.failing_since is None
