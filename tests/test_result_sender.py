"""A result not yet delivered stays held by its worker until its coordinator host acknowledges it, however long
that takes (issue: a database outage longer than CJ_RESULT_DELIVERY_TIMEOUT_S used to release the lease, and
the Supervisor then expired and bought the comparison again). No Ray: the host is a stand-in."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from actors import provider_worker
from cjcore.contracts import ComparisonResult, Winner


class UnacknowledgingHost:
    """Acknowledges nothing (its batch's writes failing) until `until`, then everything."""

    def __init__(self, late_after: float, until: float):
        self.late_after, self.until = late_after, until
        self.calls = 0
        self.late = asyncio.Event()  # asked again after the delivery timeout, and still not acknowledging
        self.record_many = SimpleNamespace(remote=self._record_many)

    async def _record_many(self, results: list[ComparisonResult]) -> list[str]:
        self.calls += 1
        now = time.monotonic()
        if now >= self.until:
            return [r.correlation_id for r in results]
        if now >= self.late_after:
            self.late.set()
        return []


def test_results_stay_held_past_the_delivery_timeout_until_the_host_acknowledges_them(monkeypatch):
    async def go() -> tuple[list[list[str]], list[list[str]], UnacknowledgingHost]:
        now = time.monotonic()
        host = UnacknowledgingHost(late_after=now + 0.3, until=now + 1.0)  # both past the 0.1 s timeout below
        monkeypatch.setattr(provider_worker.ray, "get_actor", lambda *a, **k: host)
        settled: list[list[str]] = []
        released = asyncio.Event()

        def done(ids: list[str]) -> None:
            settled.append(ids)
            if ids:
                released.set()

        sender = provider_worker.ResultSender("ns", hosts=1, timeout_s=0.1, done=done)
        for i in range(3):
            sender.add(ComparisonResult(f"c{i}", "b", Winner.ESSAY_A))
        await asyncio.wait_for(host.late.wait(), 10)
        early = [ids for ids in settled if ids]
        await asyncio.wait_for(released.wait(), 10)
        return early, [ids for ids in settled if ids], host

    early, settled, host = asyncio.run(go())
    assert early == []  # still held: nothing released while unacknowledged
    assert settled == [["c0", "c1", "c2"]] and host.calls > 2  # re-sent until acknowledged, then released
