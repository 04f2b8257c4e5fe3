"""Coordinator hosts and fencing: a host that lost a batch (another activation claimed it since) can no longer
write it, whatever the write; the host holding the current epoch writes on."""

from __future__ import annotations

import asyncio

import pytest

from cjcore.batch_metadata import BatchMetadata
from cjcore.contracts import BatchState, BudgetSource, ComparisonResult, Winner, parse_batch_request
from cjcore.errors import Fenced
from cjcore.retry import Retry
from storage.batch_writes import BatchWrites
from storage.database import make_engine
from storage.metrics import MetricsQueries
from storage.queue import BatchQueue
from storage.records import NewBatch
from tests.helpers import essays


def test_a_host_holding_a_stale_epoch_is_refused_every_write_and_writes_nothing(pg_url):
    async def go() -> None:
        engine = make_engine(pg_url, pool_size=2)
        repo, queue = BatchWrites(engine, outage_s=10), BatchQueue(engine, "cj-fencing", outage_s=10)
        bid = "fenced-1"
        request = parse_batch_request({"batch_id": bid, "essays": essays(4, "fe"), "max_comparisons": 10})
        try:
            await repo.create_batches([NewBatch(bid, request, 10, BudgetSource.RUNNER_OVERRIDE, 95.0)],
                                      "cj-fencing", "call-1")
            assert await repo.claim(bid, "cj-coordinators-0") is None  # QUEUED: not admitted, nobody holds it
            assert await queue.admit(bid)
            old = await repo.claim(bid, "cj-coordinators-0")
            assert old is not None and old[1] is BatchState.INITIALIZING
            assert await repo.transition(bid, BatchState.GENERATING_PAIRS, epoch=old[0])
            assert await repo.insert_round(bid, 1, [("f1", "fe00", "fe01"), ("f2", "fe02", "fe03")], epoch=old[0])

            new = await repo.claim(bid, "cj-coordinators-1")  # e.g. the batch activated on another host
            assert new is not None and new[0] == old[0] + 1
            stale = old[0]
            verdict = [ComparisonResult("f1", bid, Winner.ESSAY_A)]
            with pytest.raises(Fenced):
                await repo.record_results(bid, verdict, epoch=stale)
            with pytest.raises(Fenced):
                await repo.insert_retries(bid, [("f3", Retry("f2", "fe02", "fe03", 2))], epoch=stale)
            with pytest.raises(Fenced):
                await repo.merge_metadata(bid, BatchMetadata(cancel_requested=True), epoch=stale)
            with pytest.raises(Fenced):
                await repo.transition(bid, BatchState.SCORING, epoch=stale)
            with pytest.raises(Fenced):
                await repo.finalize(bid, BatchState.CANCELLED, "cancelled", epoch=stale)
            snap = await repo.load(bid)
            assert snap.state is BatchState.WAITING_CALLBACKS and not snap.metadata.cancel_requested
            assert (snap.counters.submitted, snap.counters.completed) == (2, 0) and len(snap.pending) == 2

            # The current holder writes on.
            recorded, counters = await repo.record_results(bid, verdict, epoch=new[0])
            assert recorded == {"f1"} and counters.completed == 1
            assert await MetricsQueries(engine).check_invariants(bid) == []
        finally:
            await engine.dispose()

    asyncio.run(go())
