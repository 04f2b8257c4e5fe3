"""The batch state machine (DESIGN §3 invariant 8). Terminal states never change."""

from __future__ import annotations

from cjcore.contracts import TERMINAL_STATES, BatchState

S = BatchState
_ALLOWED: dict[BatchState, frozenset[BatchState]] = {
    S.QUEUED: frozenset({S.INITIALIZING}),
    S.INITIALIZING: frozenset({S.GENERATING_PAIRS}),
    S.GENERATING_PAIRS: frozenset({S.WAITING_CALLBACKS}),
    S.WAITING_CALLBACKS: frozenset({S.SCORING}),
    S.SCORING: frozenset({S.GENERATING_PAIRS, S.COMPLETED}),
}


def can_move(current: BatchState, target: BatchState) -> bool:
    if current in TERMINAL_STATES:
        return False
    if target in (S.FAILED, S.CANCELLED):
        return True
    return target in _ALLOWED.get(current, frozenset())


def sources_of(target: BatchState) -> list[BatchState]:
    """Every state a batch may move to `target` from; storage guards its UPDATEs with this list."""
    return [s for s in BatchState if can_move(s, target)]
