import pytest

from cjcore.completion import Policy, completion_pct, decide, failing, round_cap, success_upper, typical_ceiling
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
        (Counters(100, 40, 2, 38, 2), 24, 0.01, 2, 0.5, "low_success_rate"),
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


def test_one_bad_round_is_retried_and_only_a_judge_surely_below_the_minimum_fails():
    """A 36-essay batch whose round 2 came back all malformed has 36 valid of 144 answered attempts, exactly
    25%: the rate could well be above CJ_MIN_SUCCESS_RATE, so it is retried (it failed before, in 20 of 20 seeds
    of an independent simulation). A judge surely below it (the upper end of its 95% interval) fails."""
    policy = Policy(threshold_pct=95, stability_threshold=0.05, max_iterations=5, min_success_rate=0.25)
    assert not failing(Counters(1000, 144, 36, 108, 2), policy)
    assert success_upper(36, 144) > 0.25 > success_upper(5, 100)
    assert failing(Counters(1000, 100, 5, 95, 3), policy)
    assert failing(Counters(100, 40, 0, 40, 2), policy)
    assert not failing(Counters(100, 40, 0, 40, 2), Policy(95, 0.05, 5, min_success_rate=0.0))


def test_the_round_cap_follows_the_budget_and_the_round_size():
    """Half a pair per essay a round at 36 essays is 18 comparisons a round: a budget of 630 needs 35 rounds,
    so the default cap of 20 would end the batch `max_iterations` at 20 per essay."""
    assert round_cap(20, 630, 36, 0.5) == 37
    assert round_cap(20, 100, 36, 1.0) == 20


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


def test_the_typical_ceiling_matches_the_measured_plateau_and_grows_with_the_budget():
    """36 essays, every pair once: the simulated ENG5 judge levels off at 0.917–0.925 (`bench pairing`)."""
    assert 0.91 < typical_ceiling(36, 630) < 0.93
    assert typical_ceiling(24, 100) < typical_ceiling(24, 200) < typical_ceiling(24, 276)
    assert typical_ceiling(36, 10_000) == typical_ceiling(36, 630)  # no pair is compared twice
