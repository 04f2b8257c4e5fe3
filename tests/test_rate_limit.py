"""The pool limiter with a fake clock: milliseconds, no sleeps."""

import pytest

from cjcore.rate_limit import Limits, PoolLimiter, acquire_depth, check_limits


def _drain(limiter, now, tokens=100):
    granted = 0
    while limiter.try_acquire(tokens, now)[1] is not None:
        granted += 1
    return granted


def test_holds_one_seconds_worth_until_the_server_has_told_its_remaining():
    lim = PoolLimiter(Limits(600, 10_000_000), now=0.0)
    assert _drain(lim, 0.0) == 10  # 600/min = 10/s
    assert lim.try_acquire(100, 0.0)[0] == pytest.approx(0.1)
    assert lim.wait_for(10, 300.0) == 0.0
    assert lim.buckets["requests"].level == 10  # idle, but blind: still one second's worth
    grants = [lim.try_acquire(10, 300.0)[1] for _ in range(5)]
    # The answer to the first of five requests granted at t=300, received at t=300.5: the server has
    # refilled 5 since, and will charge the 4 we granted after it.
    lim.observe({"anthropic-ratelimit-requests-limit": "600", "anthropic-ratelimit-requests-remaining": "590"},
                300.5, grants[0])
    assert _drain(lim, 300.5) == 591
    assert _drain(lim, 361.0) == 600  # a minute's capacity (not more), like the provider's bucket


def test_sixty_seconds_never_grant_more_than_the_limit_plus_the_start_allowance():
    lim = PoolLimiter(Limits(600, 10_000_000), now=0.0)
    lim.synced = True
    granted, t = 0, 0.0
    while t < 60.0:
        wait, grant = lim.try_acquire(100, t)
        if grant is None:
            t += wait
        else:
            granted += 1
    assert 600 <= granted <= 611


def test_input_tokens_bind_when_prompts_are_long():
    lim = PoolLimiter(Limits(4000, 60_000), now=0.0)  # 1,000 input tokens a second
    assert _drain(lim, 0.0, tokens=490) == 2  # 490 × 1.02 margin = 500
    assert lim.wait_for(490, 0.0) == pytest.approx(0.5, abs=0.01)


def test_settle_refunds_an_overestimate_and_charges_an_underestimate():
    lim = PoolLimiter(Limits(4000, 60_000), now=0.0)
    _, grant = lim.try_acquire(800, 0.0)
    assert grant.input_tokens == 816  # 2% margin
    assert lim.buckets["input_tokens"].level == pytest.approx(184)
    lim.settle(grant, 300, 50, 0.0)
    assert lim.buckets["input_tokens"].level == pytest.approx(700)
    lim.input_ratio = 1.0
    _, grant = lim.try_acquire(100, 0.0)
    lim.settle(grant, 900, 50, 0.0)  # the answer used more than estimated: a debt
    assert lim.buckets["input_tokens"].level == pytest.approx(-200)


def test_the_tokenizer_ratio_is_learned_from_true_usage():
    lim = PoolLimiter(Limits(4000, 6_000_000), now=0.0)
    for _ in range(60):
        _, grant = lim.try_acquire(1000, 0.0)
        lim.settle(grant, 800, 50, 0.0)  # the prompt estimate is 25% high
    assert lim.input_ratio == pytest.approx(0.8, abs=0.01)
    assert lim.try_acquire(1000, 0.0)[1].input_tokens == pytest.approx(816, abs=2)


def test_a_retry_after_pauses_the_whole_pool():
    lim = PoolLimiter(Limits(6000, 10_000_000), now=0.0)
    lim.pause(2.0, now=0.0)
    assert lim.try_acquire(10, 1.0) == (pytest.approx(1.0), None)
    assert lim.try_acquire(10, 2.0)[1] is not None


def test_a_sporadic_529_does_not_pause_the_pool_but_an_overload_that_goes_on_does():
    lim = PoolLimiter(Limits(6000, 10_000_000), now=0.0)
    grants = [lim.try_acquire(10, 0.0)[1] for _ in range(40)]
    for i, g in enumerate(grants[:20]):  # one answer in ten is a 529: the provider is working
        sporadic = i % 10 == 9
        lim.report(g, {}, None if sporadic else (10, 5), 1.0 if sporadic else None, 0.1, overloaded=sporadic)
    assert lim.paused_until == 0.0 and lim.try_acquire(10, 0.1)[1] is not None
    for g in grants[20:27]:  # then seven 529s in a row: 9 of the last 27 answers, still under half
        lim.report(g, {}, None, 1.0, 0.5, overloaded=True)
    assert lim.paused_until == 0.0
    for g in grants[27:]:  # past half of the answers of the last two seconds: the pool waits for retry-after
        lim.report(g, {}, None, 1.0, 0.6, overloaded=True)
    assert lim.try_acquire(10, 1.0) == (pytest.approx(0.6), None)
    late = lim.try_acquire(10, 5.0)[1]  # seconds later the old answers have left the window
    lim.report(late, {}, (10, 5), None, 5.0)
    lim.report(lim.try_acquire(10, 5.0)[1], {}, (10, 5), None, 5.0)
    lim.report(lim.try_acquire(10, 5.0)[1], {}, None, 1.0, 5.1, overloaded=True)  # 1 of 3: no pause
    assert lim.try_acquire(10, 5.2)[1] is not None


def test_a_429_pauses_the_pool_whatever_the_answers_before_it():
    lim = PoolLimiter(Limits(6000, 10_000_000), now=0.0)
    for _ in range(20):
        lim.report(lim.try_acquire(10, 0.0)[1], {}, (10, 5), None, 0.1)
    lim.report(lim.try_acquire(10, 0.0)[1], {}, None, 2.0, 0.2)  # our key is over its limit
    assert lim.try_acquire(10, 1.2) == (pytest.approx(1.0), None)


def test_permit_requests_in_flight_cover_the_round_trip_at_the_pool_rate():
    assert acquire_depth(3000, 2) == 7  # 50/s × 0.25 s over 2 workers
    assert acquire_depth(300, 2) == 2  # a slow pool: at least two, so the pump is never idle on one trip
    assert acquire_depth(12_000, 1) == 50


def test_refusals_of_requests_sent_before_a_pause_do_not_extend_it():
    lim = PoolLimiter(Limits(6000, 10_000_000), now=0.0)
    early = [lim.try_acquire(10, 0.0)[1] for _ in range(3)]  # in flight together
    lim.pause(1.0, now=0.5, grant=early[0])
    for g in early[1:]:  # the other in-flight requests come back refused during the pause
        lim.pause(1.0, now=0.9, grant=g)
    assert lim.try_acquire(10, 1.5)[1] is not None  # the pause ended at 1.5, not 1.9
    late = lim.try_acquire(10, 1.6)[1]
    lim.pause(1.0, now=1.7, grant=late)  # refused after the pause: the overload goes on
    assert lim.try_acquire(10, 2.0) == (pytest.approx(0.7), None)


@pytest.mark.parametrize("real", [300, 1200])
def test_limits_are_learned_from_headers_when_configured_wrong_by_2x(real):
    configured = 600
    lim = PoolLimiter(Limits(configured, 10_000_000), now=0.0)
    lim.observe({"anthropic-ratelimit-requests-limit": str(real),
                 "anthropic-ratelimit-requests-remaining": "0"}, now=0.0)
    assert lim.learned == {"requests": real}
    granted, t = 0, 1.0
    while t < 61.0:  # a sustained minute at the learned rate
        wait, grant = lim.try_acquire(10, t)
        if grant is None:
            t += wait
        else:
            granted += 1
    assert real - 1 <= granted <= real + real / 60 + 1


def test_after_the_first_sync_the_servers_remaining_only_lowers_our_level():
    lim = PoolLimiter(Limits(600, 10_000_000), now=0.0)
    lim.observe({"anthropic-ratelimit-requests-limit": "600", "anthropic-ratelimit-requests-remaining": "30"}, 0.0)
    assert _drain(lim, 0.0) == 30
    lim.observe({"anthropic-ratelimit-requests-limit": "600", "anthropic-ratelimit-requests-remaining": "50"}, 0.0)
    assert _drain(lim, 0.0) == 0  # a higher remaining does not raise us again
    # Someone else drew on the key: the server had nothing left when it admitted our request.
    _, grant = lim.try_acquire(10, 1.0)
    lim.try_acquire(10, 1.0)
    lim.observe({"anthropic-ratelimit-requests-limit": "600", "anthropic-ratelimit-requests-remaining": "0"}, 1.2,
                grant)
    assert _drain(lim, 1.2) == 1  # the server's 0, + 2 refilled since, − 1 we granted after it


def test_output_tokens_bucket_uses_a_running_estimate_of_real_answers():
    lim = PoolLimiter(Limits(4000, 10_000_000, output_tokens_per_min=60_000), now=0.0)  # 1,000/s
    _, grant = lim.try_acquire(10, 0.0)
    assert grant.output_tokens == 256
    for _ in range(50):
        lim.settle(grant, 10, 40, 0.0)
    assert lim.output_estimate < 50


@pytest.mark.parametrize(
    ("limits", "real", "problem"),
    [(Limits(0, 1000), False, "requests per minute must be positive"),
     (Limits(100, -1), False, "input_tokens per minute must be positive"),
     (Limits(50_000, 1000), True, "above any known Anthropic tier"),
     (Limits(50_000, 1000), False, None)],
)
def test_settings_check(limits, real, problem):
    found = check_limits(limits, real_provider=real)
    assert (problem in found[0]) if problem else found == []


def test_a_restarted_limiter_ignores_reports_of_its_predecessors_grants_and_starts_empty():
    limits = Limits(4_000, 100_000_000)
    old = PoolLimiter(limits, now=0.0)
    old.observe({"anthropic-ratelimit-requests-remaining": "3990"}, 0.0)
    old_grants = [old.try_acquire(10, 100.0 + i)[1] for i in range(3_000)]  # its totals run into the thousands
    new = PoolLimiter(limits, now=3_100.0, restarted=True)  # the actor restarted
    headers = {"anthropic-ratelimit-requests-limit": "4000", "anthropic-ratelimit-requests-remaining": "10"}
    # Read as its own, the old grant's totals made "10 remained" look like thousands: 4,000 went out at once.
    assert not new.report(old_grants[-1], headers, (100, 20), None, 3_100.5)
    assert not new.synced
    # Half a second's refill at 4,000/min: a restart starts empty, where a first start holds one second's worth
    # (its predecessor may have just spent the server's allowance: bursting then met 429s when it was killed).
    assert _drain(new, 3_100.5) == 33
    _, mine = new.try_acquire(10, 3_101.5)
    assert new.report(mine, headers, (100, 20), None, 3_101.6)
    assert new.synced and _drain(new, 3_101.6) == 16  # the server's 10, + 6.7 refilled in the 0.1 s since
