import pytest

from cjcore.completion import Policy, completion_pct, decide, failing
from cjcore.contracts import BatchState, Counters
from cjcore.state_machine import can_move

POLICY = Policy(threshold_pct=95, stability_threshold=0.05, max_iterations=5, target_reliability=0.9)


@pytest.mark.parametrize(
    ("counters", "n", "change", "new_valid", "reliability", "expected"),
    [
        (Counters(350, 6, 6, 0, 1), 4, None, 6, 0.3, "threshold"),  # 4 essays: all 6 pairs in, first round
        (Counters(100, 24, 24, 0, 1), 24, None, 24, 0.5, None),
        (Counters(100, 48, 48, 0, 2), 24, 0.01, 24, 0.5, "stable"),
        (Counters(100, 100, 80, 20, 4), 24, 0.5, 20, 0.5, "budget"),
        (Counters(1000, 120, 120, 0, 5), 24, 0.5, 24, 0.5, "max_iterations"),
        (Counters(100, 40, 5, 35, 2), 24, 0.01, 5, 0.5, "low_success_rate"),
        (Counters(1000, 60, 60, 0, 3), 24, 0.5, 24, 0.92, "reliable"),  # 5 valid per essay, reliability 0.92
        (Counters(1000, 36, 36, 0, 2), 24, 0.5, 12, 0.92, None),  # 3 per essay: reliability too early to trust
        (Counters(1000, 60, 60, 0, 3), 24, 0.5, 24, 0.88, None),  # below the target
    ],
)
def test_decide(counters, n, change, new_valid, reliability, expected):
    d = decide(counters, n, change, POLICY, new_valid=new_valid, reliability=reliability)
    assert d.reason == expected
    assert d.finalize == (expected is not None)
    assert d.failed == (expected == "low_success_rate")


def test_a_round_that_added_no_valid_verdict_is_neither_stable_nor_reliable():
    """A 529 episode through a whole round leaves the fit unchanged (change 0.0): that is not stability."""
    counters = Counters(1000, 120, 60, 60, 4)
    assert decide(counters, 24, 0.0, POLICY, new_valid=0, reliability=0.95).finalize is False
    assert decide(counters, 24, 0.0, POLICY, new_valid=5, reliability=0.95).finalize is False  # < a quarter of 24
    assert decide(counters, 24, 0.0, POLICY, new_valid=6, reliability=0.95).reason == "reliable"


def test_exactly_the_minimum_success_rate_is_failing():
    """One good round, then one whose attempts all failed: 25% valid is at the limit, and fails."""
    policy = Policy(threshold_pct=95, stability_threshold=0.05, max_iterations=5, min_success_rate=0.25)
    assert failing(Counters(100, 40, 10, 30, 2), policy)
    assert not failing(Counters(100, 40, 11, 29, 2), policy)
    assert not failing(Counters(100, 40, 0, 40, 2), Policy(95, 0.05, 5, min_success_rate=0.0))


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
