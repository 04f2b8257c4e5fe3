"""Failure policy (pure): what is retried, with which pair, within which budget."""

import pytest

from cjcore.completion import Policy, failing, provider_out
from cjcore.contracts import Counters, ErrorType, PlannedPair
from cjcore.retry import NOT_JUDGED, RETRYABLE, TRANSIENT, Attempt, backoff_s, plan_retries, should_retry


@pytest.mark.parametrize("error", sorted(RETRYABLE - TRANSIENT))
def test_the_judges_retryable_errors_are_retried_until_the_last_attempt(error):
    assert should_retry(error, 1, 3) and should_retry(error, 2, 3)
    assert not should_retry(error, 3, 3)


@pytest.mark.parametrize("error", sorted(TRANSIENT))
def test_the_providers_failures_are_retried_past_the_attempt_cap_and_never_judged(error):
    assert should_retry(error, 3, 3) and should_retry(error, 12, 3)
    assert error in NOT_JUDGED and error in RETRYABLE


def test_backoff_doubles_per_attempt_up_to_its_cap_scaled_by_jitter():
    assert [backoff_s(a, 0.5, 60.0, 1.0) for a in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_s(20, 0.5, 60.0, 1.0) == 60.0
    assert backoff_s(3, 0.5, 60.0, 0.5) == 1.0


def test_the_provider_is_out_only_after_outage_s_of_nothing_but_transient_failures():
    assert not provider_out(None, now=10_000.0, outage_s=900.0)  # the latest answer was the judge's
    assert not provider_out(100.0, now=999.0, outage_s=900.0)
    assert provider_out(100.0, now=1_000.0, outage_s=900.0)


def test_transient_failures_never_make_the_batch_failing():
    policy = Policy(threshold_pct=95, stability_threshold=0.1, max_iterations=5, min_success_rate=0.25,
                    min_attempts_for_failure=20)
    # 5 valid of 100 results, 90 of the failures the provider's: judged on 10 answers, 5 valid.
    assert not failing(Counters(200, 100, 5, 95), policy, not_judged=90)
    assert failing(Counters(200, 100, 5, 95), policy, not_judged=0)


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
    assert failing(Counters(100, 20, 0, 20), policy)  # none valid of 20: surely below 25%
    assert not failing(Counters(100, 20, 5, 15), policy)  # 25% of 20: it could be well above
