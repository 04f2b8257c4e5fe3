"""Failure policy (pure): what is retried, with which pair, within which budget."""

import pytest

from cjcore.completion import Policy, failing
from cjcore.contracts import Counters, ErrorType, PlannedPair
from cjcore.retry import RETRYABLE, Attempt, plan_retries, should_retry


@pytest.mark.parametrize("error", sorted(RETRYABLE))
def test_retryable_errors_are_retried_until_the_last_attempt(error):
    assert should_retry(error, 1, 3) and should_retry(error, 2, 3)
    assert not should_retry(error, 3, 3)


@pytest.mark.parametrize("error", [ErrorType.INVALID_REQUEST, ErrorType.AUTHENTICATION, ErrorType.MAX_TOKENS,
                                   ErrorType.CANCELLED, None])
def test_permanent_errors_and_verdicts_are_not_retried(error):
    assert not should_retry(error, 1, 3)


def test_a_first_failure_asks_the_same_pair_again_and_a_second_moves_to_a_fresh_pair():
    asked = []

    def fresh(k):
        asked.append(k)
        return [PlannedPair("x", "y")][:k]

    first, second = Attempt("c1", "a", "b", 1), Attempt("c2", "c", "d", 2)
    retries = plan_retries([first, second], budget_left=10, fresh_pairs=fresh)
    assert asked == [1]
    assert {retries[0].essay_a_id, retries[0].essay_b_id} == {"a", "b"}
    assert (retries[0].retry_of, retries[0].attempt) == ("c1", 2)
    fresh_retry = retries[1]
    assert (fresh_retry.essay_a_id, fresh_retry.essay_b_id, fresh_retry.retry_of, fresh_retry.attempt) == (
        "x", "y", "c2", 3)


def test_without_a_fresh_pair_the_same_pair_is_asked_again():
    retries = plan_retries([Attempt("c2", "c", "d", 2)], budget_left=10, fresh_pairs=lambda k: [])
    assert {retries[0].essay_a_id, retries[0].essay_b_id} == {"c", "d"} and retries[0].attempt == 3


def test_retries_never_exceed_the_budget_left():
    failed = [Attempt(f"c{i}", "a", "b", 1) for i in range(5)]
    assert len(plan_retries(failed, budget_left=2, fresh_pairs=lambda k: [])) == 2
    assert plan_retries(failed, budget_left=0, fresh_pairs=lambda k: []) == []


def test_retries_of_one_pair_draw_the_ab_order_afresh():
    orders = {(r.essay_a_id, r.essay_b_id)
              for i in range(40) for r in plan_retries([Attempt(f"c{i}", "a", "b", 1)], 1, lambda k: [])}
    assert orders == {("a", "b"), ("b", "a")}


def test_failing_needs_enough_attempts_and_a_low_valid_rate():
    policy = Policy(threshold_pct=95, stability_threshold=0.1, max_iterations=5, min_success_rate=0.25,
                    min_attempts_for_failure=20)
    assert not failing(Counters(100, 10, 0, 10), policy)  # too few attempts to judge
    assert failing(Counters(100, 20, 4, 16), policy)
    assert not failing(Counters(100, 20, 5, 15), policy)
