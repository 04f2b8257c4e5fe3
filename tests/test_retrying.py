"""The one retry policy (cjcore.retrying): transient failures retried with jittered backoff until the time is
up, anything else raised at once, a hook's number of seconds used as the wait."""

from __future__ import annotations

import asyncio
import time

import pytest

from cjcore.retrying import retrying


class Flaky(Exception):
    pass


def _run(on, fail_times: int, within_s: float, exc: type[Exception] = Flaky) -> tuple[int, list[float]]:
    calls: list[float] = []

    async def go() -> int:
        async for attempt in retrying(on, within_s=within_s, first_s=0.01, max_s=0.04):
            with attempt:
                calls.append(time.monotonic())
                if len(calls) <= fail_times:
                    raise exc("not yet")
                return len(calls)
        raise AssertionError("unreachable")

    return asyncio.run(go()), calls


def test_transient_failures_are_retried_until_the_call_answers():
    answered_on, calls = _run(lambda e: isinstance(e, Flaky), fail_times=4, within_s=10)
    assert answered_on == 5
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert all(g >= 0.01 for g in gaps)  # backoff between tries, never a busy loop


def test_other_failures_are_raised_at_once_and_transient_ones_once_the_time_is_up():
    with pytest.raises(ValueError):
        _run(lambda e: isinstance(e, Flaky), fail_times=3, within_s=10, exc=ValueError)
    calls: list[float] = []

    async def never() -> None:
        async for attempt in retrying(lambda e: isinstance(e, Flaky), within_s=0.2, first_s=0.01, max_s=0.04):
            with attempt:
                calls.append(time.monotonic())
                raise Flaky("down")

    with pytest.raises(Flaky):
        asyncio.run(never())
    assert len(calls) > 2 and calls[-1] - calls[0] < 1.0


def test_the_waits_are_jittered_so_callers_failing_together_do_not_retry_in_step():
    starts = []
    for _ in range(6):
        _, calls = _run(lambda e: isinstance(e, Flaky), fail_times=1, within_s=10)
        starts.append(round(calls[1] - calls[0], 4))
    assert len(set(starts)) > 1


def test_a_hook_may_name_the_wait_as_a_provider_retry_after_does():
    _, calls = _run(lambda e: 0.15 if isinstance(e, Flaky) else False, fail_times=1, within_s=10)
    assert calls[1] - calls[0] >= 0.15
