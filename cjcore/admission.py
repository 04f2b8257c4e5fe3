"""Admission: which QUEUED batches are put in progress next, and how many may be in progress at once (pure).

Any number of batches may be accepted (stored QUEUED). A batch in progress costs bytes on a coordinator host
(a passivated one less still), so the bound is memory, not processes: `default_max_live`. Within it, admission
admits by work: enough batches that the comparisons waiting for the provider cover `backlog_s` seconds of its
rate limit, and no more, so the provider stays at its limit while each batch's rounds go round quickly and
batches finish as they go, not all at the end of a run (`admit_by_work`). Message Batches wait at the provider
for minutes to hours, not at our rate limit: in that mode only memory bounds what is in progress.

Order: least work first, aged. A batch's work is its comparisons, min(budget, n(n−1)/2); every second a
batch waits takes `aging_per_s` comparisons off it. So a 4-essay batch (6 comparisons) goes in front of the
60-comparison batches queued a few seconds before it, and a large batch is never starved: after
work / aging_per_s seconds it is in front of anything that arrives new.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cjcore.contracts import denominator

MEMORY_PER_LIVE_BATCH_BYTES = 2 * 2**20  # a generous bound on an active ENG5-sized coordinator (docs: benchmarks)
DEFAULT_AGING_PER_S = 2.0  # comparisons of priority a queued batch gains per second waited


@dataclass(frozen=True, slots=True)
class Queued:
    batch_id: str
    total_budget: int
    n_essays: int
    waited_s: float


def work(total_budget: int, n_essays: int) -> int:
    """Comparisons the batch can ask for at most."""
    return denominator(total_budget, n_essays)


def priority(q: Queued, aging_per_s: float = DEFAULT_AGING_PER_S) -> float:
    """Lower goes first."""
    return work(q.total_budget, q.n_essays) - aging_per_s * q.waited_s


def order(queued: list[Queued], aging_per_s: float = DEFAULT_AGING_PER_S) -> list[Queued]:
    """The queue in admission order (ties: longest waiting, then id)."""
    return sorted(queued, key=lambda q: (priority(q, aging_per_s), -q.waited_s, q.batch_id))


def to_admit(live: int, starting: int, max_live: int, start_concurrency: int) -> int:
    """How many more batches to activate now: within the in-progress bound and the activation bound."""
    return max(0, min(max_live - live, start_concurrency - starting))


def first_round_work(n_essays: int, total_budget: int, pairs_per_essay: float) -> int:
    """Comparisons a batch asks for in its first round (what admitting it adds to the provider's backlog)."""
    return max(1, min(total_budget, math.ceil(n_essays * pairs_per_essay)))


def admit_by_work(candidates: list[Queued], room: int, backlog: int, backlog_target: float | None,
                  pairs_per_essay: float) -> list[Queued]:
    """Of the queue (in admission order), those to admit now: at most `room`, and only while the backlog
    (comparisons waiting for the provider, counting each admitted batch's first round) is under
    `backlog_target` (None: no work bound). The head of the queue is admitted whenever there is room and the
    backlog is under target, so a large batch is never starved."""
    out: list[Queued] = []
    for q in candidates:
        if len(out) == room or (backlog_target is not None and backlog >= backlog_target):
            break
        out.append(q)
        backlog += first_round_work(q.n_essays, q.total_budget, pairs_per_essay)
    return out


def default_max_live(memory_bytes: float) -> int:
    """CJ_MAX_LIVE_BATCHES when unset: a quarter of the memory Ray can schedule, at MEMORY_PER_LIVE_BATCH_BYTES
    each; at least 1."""
    return max(1, int(memory_bytes / 4 / MEMORY_PER_LIVE_BATCH_BYTES))
