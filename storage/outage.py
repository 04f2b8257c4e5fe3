"""Riding out a PostgreSQL restart: every storage call that fails because the connection is gone is
retried with jittered backoff (cjcore.retrying) until `outage_s` has passed (then DatabaseUnavailable).

What counts as "gone": the socket refused or reset, SQLSTATE class 08 (connection exception) or 57P
(admin shutdown, "cannot connect now" while the server starts), or SQLAlchemy marking the connection
invalidated. A connection that died while idle fails its first use and the call is retried on a fresh one
(SQLAlchemy invalidates the pool's older connections on a disconnect). A retried call repeats a whole
transaction; every write the stores make is idempotent or
guarded by the state it expects, so a transaction whose commit was lost with the connection is not
applied twice (the guard turns the repeat into a no-op, which the coordinator answers by reloading).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError

from cjcore.errors import DatabaseUnavailable
from cjcore.retrying import retrying

log = logging.getLogger(__name__)

_DISCONNECT_SQLSTATES = ("08", "57P")
T = TypeVar("T")


def is_disconnect(exc: BaseException) -> bool:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, ConnectionError | OSError):
            return True
        state = getattr(e, "sqlstate", None)
        if isinstance(state, str) and state.startswith(_DISCONNECT_SQLSTATES):
            return True
        e = getattr(e, "orig", None) or e.__cause__ or e.__context__
    return False


async def retry_while_down(call: Callable[[], Awaitable[T]], outage_s: float, what: str) -> T:
    def down(exc: Exception) -> bool:
        if not is_disconnect(exc):
            return False
        log.warning("database unreachable during %s (%s); retrying", what, type(exc).__name__)
        return True

    try:
        async for attempt in retrying(down, within_s=outage_s):
            with attempt:
                return await call()
    except Exception as exc:
        if is_disconnect(exc):
            raise DatabaseUnavailable(f"database unreachable for {outage_s:g}s ({what})") from exc
        raise
    raise AssertionError("unreachable: stamina retries until the call returns or raises")


def rides_out_outages(cls: type[T]) -> type[T]:
    """Wrap every public coroutine method a class defines in `retry_while_down(…, self.outage_s)` (every
    storage.records.Store subclass gets this when it is defined)."""
    for name, method in list(vars(cls).items()):
        if name.startswith("_") or not inspect.iscoroutinefunction(method):
            continue

        def wrap(m: Callable[..., Awaitable[Any]], label: str) -> Callable[..., Awaitable[Any]]:
            @functools.wraps(m)
            async def wrapper(self: Any, *args: Any, **kw: Any) -> Any:
                return await retry_while_down(lambda: m(self, *args, **kw), self.outage_s, label)
            return wrapper

        setattr(cls, name, wrap(method, name))
    return cls
