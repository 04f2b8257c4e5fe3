"""Recording metrics from any actor, on any node: each process buffers what it records and sends it to
the one `cj-metrics` actor (actors/metrics_server.py) every half second, which serves everything at
`/metrics`. Metrics never slow or break a batch: sending is fire-and-forget, and what cannot be sent is
kept (up to a cap) for the next try.

    metrics.inc("llm_provider_requests_total", provider="anthropic", model=m, outcome="ok")
    metrics.observe("cj_bt_fit_seconds", 0.004)
    metrics.set_gauge("cj_supervisor_last_run_timestamp", time.time())
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import ray

from actors import names
from cjcore.metrics_catalog import BY_NAME

log = logging.getLogger(__name__)

FLUSH_S = 0.5
MAX_BUFFERED = 50_000

Event = tuple[str, str, tuple[tuple[str, str], ...], float]  # (kind, name, labels, value)

_events: list[Event] = []  # observations and gauge settings, in order
_counts: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}  # increments, summed until the next flush
_namespace: str | None = None
_server: ray.actor.ActorHandle | None = None
_task: asyncio.Task[None] | None = None


def configure(namespace: str) -> None:
    """Call in the actor's constructor: where this process sends its metrics."""
    global _namespace
    _namespace = namespace


def _record(kind: str, name: str, value: float, labels: dict[str, str]) -> None:
    global _task
    metric = BY_NAME[name]  # a KeyError here is a typo in our code, caught by the tests
    assert set(labels) == set(metric.labels), (name, sorted(labels))
    key = tuple(sorted((k, str(v)) for k, v in labels.items()))
    if kind == "inc":
        _counts[(name, key)] = _counts.get((name, key), 0.0) + value
    elif len(_events) < MAX_BUFFERED:
        _events.append((kind, name, key, float(value)))
    if _task is None or _task.done():
        with contextlib.suppress(RuntimeError):  # no running loop: the next async caller flushes
            _task = asyncio.get_running_loop().create_task(_flush_soon())


def inc(name: str, value: float = 1.0, **labels: str) -> None:
    _record("inc", name, value, labels)


def observe(name: str, value: float, **labels: str) -> None:
    _record("observe", name, value, labels)


def set_gauge(name: str, value: float, **labels: str) -> None:
    _record("set", name, value, labels)


async def _flush_soon() -> None:
    # What is recorded while a flush is being sent waits for the next one: keep going until nothing is
    # left (a last increment must not sit in a quiet process until something else is recorded).
    while _events or _counts:
        await asyncio.sleep(FLUSH_S)
        await flush()


async def flush() -> None:
    """Send what is buffered now (a coordinator calls this before it exits)."""
    global _server
    if not (_events or _counts) or _namespace is None:
        return
    batch: list[Event] = [("inc", name, key, total) for (name, key), total in _counts.items()] + _events
    _counts.clear()
    del _events[:]
    try:
        if _server is None:
            _server = ray.get_actor(names.METRICS, namespace=_namespace)
        await _server.record.remote(batch)
    except (ValueError, ray.exceptions.RayError) as exc:
        _server = None  # looked up again next time (the metrics actor may have restarted elsewhere)
        log.debug("metrics not sent (%s); kept for the next try", type(exc).__name__)
        for kind, name, key, value in batch:
            if kind == "inc":
                _counts[(name, key)] = _counts.get((name, key), 0.0) + value
        _events[:0] = [e for e in batch if e[0] != "inc"][: MAX_BUFFERED - len(_events)]  # older first
