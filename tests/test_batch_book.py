"""The round bookkeeping a coordinator runs (cjcore.batch_book), without Ray or PostgreSQL."""

from __future__ import annotations

import pytest

from cjcore.batch_book import BatchBook, Outcome, RetryPolicy
from cjcore.completion import Policy
from cjcore.contracts import Counters, ErrorType, Winner
from cjcore.retry import Attempt
from cjcore.scores import BTFit

IDS = [f"e{i}" for i in range(6)]


def _book(**kw: object) -> BatchBook:
    policy = Policy(threshold_pct=95, stability_threshold=0.1, max_iterations=20, target_reliability=0.9)
    return BatchBook(batch_id="b", essay_ids=IDS, policy=policy, retry=RetryPolicy(3, 1.0, 8.0), **kw)  # type: ignore[arg-type]


def _sent(book: BatchBook, n: int) -> list[Attempt]:
    rows = [Attempt(f"c{i}", p.essay_a_id, p.essay_b_id, 1)
            for i, p in enumerate(book.plan_round(Counters(total_budget=100))[:n])]
    book.sent(rows)
    return rows


def test_the_first_round_covers_every_essay_and_is_tracked_in_flight():
    book = _book()
    rows = _sent(book, 100)
    assert len(rows) == 6 and {e for r in rows for e in (r.essay_a_id, r.essay_b_id)} == set(IDS)
    assert set(book.in_flight) == {r.correlation_id for r in rows} and sum(book.attempted.values()) == 6


def test_results_owe_retries_by_kind_with_backoff_for_transient_failures_only():
    book = _book()
    rows = _sent(book, 3)
    new = book.record([Outcome(rows[0].correlation_id, Winner.ESSAY_A),
                       Outcome(rows[1].correlation_id, Winner.ERROR, ErrorType.RATE_LIMIT),
                       Outcome(rows[2].correlation_id, Winner.ERROR, ErrorType.MALFORMED_OUTPUT),
                       Outcome("not-mine", Winner.ESSAY_B)], now=100.0)
    assert new == 3 and not book.in_flight
    assert book.valid is None  # a verdict this book did not send: the verdicts are reread before the fit
    assert book.not_judged == 1 and book.failing_since is None  # the judge answered after the 429
    ready, wait = book.take_due(100.0)
    assert [a.correlation_id for a in ready] == [rows[2].correlation_id]  # malformed: at once
    assert wait is not None and 0.5 <= wait <= 1.0  # the 429: after its jittered backoff
    ready, wait = book.take_due(101.0)
    assert [a.correlation_id for a in ready] == [rows[1].correlation_id] and wait is None


def test_a_retry_waits_at_least_the_providers_retry_after():
    book = _book()
    rows = _sent(book, 2)
    book.record([Outcome(rows[0].correlation_id, Winner.ERROR, ErrorType.OVERLOADED, retry_after_s=5.0),
                 Outcome(rows[1].correlation_id, Winner.ERROR, ErrorType.OVERLOADED)], now=10.0)
    ready, wait = book.take_due(11.0)  # the one without retry-after: its backoff (at most 0.5 s) is over
    assert [a.correlation_id for a in ready] == [rows[1].correlation_id] and wait == pytest.approx(4.0)
    assert book.take_due(14.9)[0] == [] and len(book.take_due(15.0)[0]) == 1


def test_a_round_is_in_once_only_its_tail_is_out_and_the_next_round_leaves_those_pairs_alone():
    ids = [f"e{i}" for i in range(40)]
    policy = Policy(threshold_pct=95, stability_threshold=0.1, max_iterations=20)
    book, barrier = (BatchBook(batch_id="b", essay_ids=ids, policy=policy, tail_pct=pct) for pct in (10.0, 0.0))
    for b in (book, barrier):
        b.sent([Attempt(f"r1/{i}", p.essay_a_id, p.essay_b_id, 1)
                for i, p in enumerate(b.plan_round(Counters(total_budget=1000)))], new_round=True)
    rows = list(book.in_flight.values())
    assert book.round_sent == len(rows) == 40 and not book.round_in()
    answered = [Outcome(r.correlation_id, Winner.ESSAY_A) for r in rows[:35]]
    book.record(answered, now=1.0)
    barrier.record(answered, now=1.0)
    assert not book.round_in()  # five out: more than a tenth of the round
    book.record([Outcome(rows[35].correlation_id, Winner.ESSAY_B)], now=2.0)
    barrier.record([Outcome(rows[35].correlation_id, Winner.ESSAY_B)], now=2.0)
    assert book.round_in() and not barrier.round_in()  # four out: the tail; without one, every result first
    tail = {(r.essay_a_id, r.essay_b_id) for r in rows[36:]}
    following = book.plan_round(Counters(total_budget=1000, submitted=40, completed=36, iterations=1))
    assert following and not tail & {(p.essay_a_id, p.essay_b_id) for p in following} \
        and not tail & {(p.essay_b_id, p.essay_a_id) for p in following}
    book.sent([Attempt(f"r2/{i}", p.essay_a_id, p.essay_b_id, 1) for i, p in enumerate(following)], new_round=True)
    assert len(book.in_flight) == 4 + len(following) and not book.round_in()
    second = [r for r in book.in_flight.values() if r.correlation_id.startswith("r2/")]
    book.record([Outcome(r.correlation_id, Winner.ESSAY_A) for r in [*rows[36:], *second[2:]]], now=3.0)
    assert len(book.in_flight) == 2 and book.round_in()
    book.record([Outcome("someone-elses", Winner.ESSAY_A)], now=3.0)  # verdicts to read back: every result first
    assert book.valid is None and not book.round_in()


def test_the_outage_clock_runs_while_only_transient_failures_come_back_and_blocks_passivation():
    book = _book()
    rows = _sent(book, 4)
    book.record([Outcome(rows[0].correlation_id, Winner.ERROR, ErrorType.OVERLOADED)], now=10.0)
    book.record([Outcome(rows[1].correlation_id, Winner.ERROR, ErrorType.TIMEOUT)], now=50.0)
    assert book.failing_since == 10.0
    assert book.provider_out(now=910.0, outage_s=900) and not book.provider_out(now=909.0, outage_s=900)
    book.drop_owed()
    assert not book.passivatable()  # the clock lives only in memory
    book.record([Outcome(rows[2].correlation_id, Winner.ESSAY_B)], now=60.0)
    assert book.failing_since is None and book.passivatable()  # one call still out, nothing owed


def test_a_stopping_batch_owes_nothing_and_a_failing_judge_gets_no_retries():
    book = _book()
    rows = _sent(book, 2)
    book.record([Outcome(rows[0].correlation_id, Winner.ERROR, ErrorType.RATE_LIMIT)], now=1.0, retry=False)
    assert not book.owed
    failing = Counters(total_budget=100, submitted=30, completed=2, failed=28)
    assert book.retries([rows[1]], failing) == []
    healthy = Counters(total_budget=100, submitted=30, completed=28, failed=2)
    (retry,) = book.retries([rows[1]], healthy)
    assert (retry.retry_of, retry.attempt) == (rows[1].correlation_id, 2)


def _fit(scores: list[float], ssr: float) -> BTFit:
    return BTFit(essay_ids=tuple(IDS), scores=tuple(scores), se=(0.5,) * len(IDS), ssr=ssr, n_comparisons=30)


def test_a_fit_is_judged_on_new_verdicts_only_and_counts_from_where_it_was_stored():
    book = _book()
    counters = Counters(total_budget=100, submitted=30, completed=30, iterations=3)
    first = book.judge(_fit([0.1 * i for i in range(6)], 0.95), counters, [], 95)
    assert first.decision.reason == "reliable" and first.new_valid == 30
    assert first.meta.completion is not None and first.meta.reliability is not None
    assert first.meta.completion.valid_at_fit == 30 and first.meta.reliability.target == 0.9
    book.fitted(_fit([0.1 * i for i in range(6)], 0.95), counters)
    again = book.judge(_fit([0.1 * i for i in range(6)], 0.95), counters, [], 95)
    assert again.new_valid == 0 and again.decision.reason != "reliable"  # nothing new: no evidence


def test_a_batch_stopping_short_of_its_target_says_why_in_its_result():
    book = _book()
    spent = Counters(total_budget=30, submitted=30, completed=12, failed=18, iterations=3)
    short = book.judge(_fit([0.1 * i for i in range(6)], 0.7), spent, [], 100)
    assert short.decision.reason == "budget"
    assert short.meta.reliability is not None and short.meta.reliability.target_unreached == "the budget was spent"
    reached = _book().judge(_fit([0.1 * i for i in range(6)], 0.95), spent, [], 100)
    assert reached.meta.reliability is not None and "target_unreached" not in reached.meta.patch()["reliability"]
