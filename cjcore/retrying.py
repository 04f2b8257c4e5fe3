"""One retry policy for the system's transient failures (a database restarting, an actor restarting, the
provider's Batches API failing): exponential backoff with jitter, bounded in time, from stamina (on
tenacity). The jitter matters here: after a PostgreSQL restart every actor that was waiting fails at once,
and without it they would all retry in step.

A call's `on` says which exceptions are transient; it may also return a number of seconds to wait instead
of the backoff (a provider's `retry-after`). When the time is up the last exception is raised."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable

import stamina
from stamina.instrumentation import set_on_retry_hooks

# Our own log lines say what is retried (naming the exception's type only): stamina's default hooks would
# log each exception's text (SQLAlchemy's includes a statement's parameters: essays) and count retries in
# prometheus_client's default registry, which no endpoint of ours exports.
set_on_retry_hooks([])


def retrying(
    on: Callable[[Exception], bool | float], *, within_s: float | None, first_s: float = 0.1, max_s: float = 2.0
) -> AsyncIterable[stamina.Attempt]:
    """`async for attempt in retrying(…): with attempt: …` — waits first_s, doubling up to max_s, each plus
    up to first_s of random jitter (so the first retries of many callers spread over first_s instead of
    landing together), until `within_s` has passed since the first try (None: for ever)."""
    return stamina.retry_context(on=on, attempts=None, timeout=within_s, wait_initial=first_s, wait_max=max_s,
                                 wait_jitter=first_s)
