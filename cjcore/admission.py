"""Admission: which QUEUED batches get a live coordinator next, and how many may be live at once (pure).

Any number of batches may be accepted (stored QUEUED); a coordinator is a process (~2.5 s of CPU to start,
~95 MB, ~1% of a core while alive on this machine), so only `max_live` are alive at once.

Order: least work first, aged. A batch's work is its comparisons, min(budget, n(n−1)/2); every second a
batch waits takes `aging_per_s` comparisons off it. So a 4-essay batch (6 comparisons) goes in front of the
60-comparison batches queued a few seconds before it, and a large batch is never starved: after
work / aging_per_s seconds it is in front of anything that arrives new.
"""

from __future__ import annotations

from dataclasses import dataclass

from cjcore.contracts import denominator

MEMORY_PER_LIVE_BATCH_BYTES = 100 * 2**20  # measured ~95 MB per live batch (README, Scale)
LIVE_BATCHES_PER_CPU = 25  # a live coordinator costs ~1% of a core idle; ~25 per core keeps latency interactive
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
    """How many more coordinators to start now: within the live bound and the start bound (starting many
    processes at once on a small node starves the ones already working)."""
    return max(0, min(max_live - live, start_concurrency - starting))


def default_max_live(cpus: float, memory_bytes: float) -> int:
    """CJ_MAX_LIVE_BATCHES when unset: 25 per CPU, and no more than half the memory Ray can schedule at
    ~100 MB each; at least 1."""
    by_cpu = int(LIVE_BATCHES_PER_CPU * cpus)
    by_memory = int(memory_bytes / 2 / MEMORY_PER_LIVE_BATCH_BYTES)
    return max(1, min(by_cpu, by_memory))
