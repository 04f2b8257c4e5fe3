import pytest

from cjcore.completion import Policy, completion_pct, decide
from cjcore.contracts import BatchState, Counters
from cjcore.state_machine import can_move

POLICY = Policy(threshold_pct=95, stability_threshold=0.05, max_iterations=5)


@pytest.mark.parametrize(
    ("counters", "n", "change", "expected"),
    [
        (Counters(350, 6, 6, 0, 1), 4, None, "threshold"),  # 4 essays: all 6 pairs in, first round
        (Counters(100, 24, 24, 0, 1), 24, None, None),
        (Counters(100, 48, 48, 0, 2), 24, 0.01, "stable"),
        (Counters(100, 100, 80, 20, 4), 24, 0.5, "budget"),
        (Counters(1000, 120, 120, 0, 5), 24, 0.5, "max_iterations"),
        (Counters(100, 40, 5, 35, 2), 24, 0.01, "low_success_rate"),
    ],
)
def test_decide(counters, n, change, expected):
    d = decide(counters, n, change, POLICY)
    assert d.reason == expected
    assert d.finalize == (expected is not None)
    assert d.failed == (expected == "low_success_rate")


def test_completion_never_exceeds_100_percent():
    assert completion_pct(Counters(10, 10, 10, 0), 3) == 100.0  # denominator min(10, 3) = 3


def test_state_machine_walks_forward_and_terminal_states_never_change():
    s = BatchState
    path = [s.INITIALIZING, s.GENERATING_PAIRS, s.WAITING_CALLBACKS, s.SCORING, s.GENERATING_PAIRS,
            s.WAITING_CALLBACKS, s.SCORING, s.COMPLETED]
    assert all(can_move(a, b) for a, b in zip(path, path[1:], strict=False))
    assert not can_move(s.WAITING_CALLBACKS, s.COMPLETED)
    assert not can_move(s.INITIALIZING, s.SCORING)
    for terminal in (s.COMPLETED, s.FAILED, s.CANCELLED):
        assert not any(can_move(terminal, t) for t in s)
    assert can_move(s.SCORING, s.FAILED) and can_move(s.WAITING_CALLBACKS, s.CANCELLED)
