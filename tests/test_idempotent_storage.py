"""A repository call repeated after its commit's reply was lost answers what the first try committed
(issue 14): the reply is failed after the commit, `storage/outage.py` repeats the call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cjcore.batch_metadata import BatchMetadata
from cjcore.contracts import BatchState, BudgetSource, ComparisonResult, Winner, parse_batch_request
from cjcore.errors import BatchExists
from cjcore.retry import Retry
from storage.batch_writes import BatchWrites
from storage.database import make_engine
from storage.metrics import MetricsQueries
from storage.queue import BatchQueue
from storage.read_models import ReadModels
from storage.records import NewBatch
from tests.helpers import essays


class LosesCommitReplies:
    """An engine whose next `lose` transactions commit and then fail as if the connection dropped."""

    def __init__(self, engine: Any):
        self._engine = engine
        self.lose = 0
        self.lost = 0

    def connect(self) -> Any:
        return self._engine.connect()

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[Any]:
        async with self._engine.begin() as conn:
            yield conn
        if self.lose:
            self.lose -= 1
            self.lost += 1
            raise ConnectionResetError("reply lost after commit (test)")


def test_every_write_repeated_after_a_lost_commit_reply_answers_what_was_committed(pg_url):
    async def go() -> None:
        real = make_engine(pg_url, pool_size=1)
        engine = LosesCommitReplies(real)
        repo, queue = BatchWrites(engine, outage_s=10), BatchQueue(engine, "cj-lost-replies", outage_s=10)  # type: ignore[arg-type]
        request = parse_batch_request({"batch_id": "lost-reply", "essays": essays(4, "lr"), "max_comparisons": 10})
        try:
            engine.lose = 1
            new = [NewBatch("lost-reply", request, 10, BudgetSource.RUNNER_OVERRIDE, 95.0)]
            await repo.create_batches(new, "cj-lost-replies", "call-1")  # no BatchExists: this very call
            with pytest.raises(BatchExists):
                await repo.create_batches(new, "cj-lost-replies", "call-2")  # a second submission of the id
            engine.lose = 1
            assert await queue.admit("lost-reply")
            assert await repo.transition("lost-reply", BatchState.GENERATING_PAIRS)

            engine.lose = 1
            counters = await repo.insert_round("lost-reply", 1, [("r1", "lr00", "lr01"), ("r2", "lr02", "lr03")])
            assert counters is not None and counters.submitted == 2

            engine.lose = 1
            out = await repo.insert_retries("lost-reply", [("r3", Retry("r1", "lr01", "lr00", 2))])
            assert out is not None and out[0] == {"r3"} and out[1].submitted == 3  # dispatched, counted once

            engine.lose = 1
            results = [ComparisonResult("r2", "lost-reply", Winner.ESSAY_A, latency_ms=7),
                       ComparisonResult("r3", "lost-reply", Winner.ESSAY_B, latency_ms=9)]
            recorded, counters = await repo.record_results("lost-reply", results)
            assert recorded == {"r2", "r3"} and counters.completed == 2
            # A different later answer for the same rows is still a no-op.
            flipped = [ComparisonResult("r2", "lost-reply", Winner.ESSAY_B, latency_ms=8)]
            assert (await repo.record_results("lost-reply", flipped))[0] == set()

            engine.lose = 1
            assert await repo.transition("lost-reply", BatchState.SCORING)  # moved once, answered as moved
            engine.lose = 1
            await repo.merge_metadata("lost-reply", BatchMetadata(error="x"))  # a merge: the same when applied twice
            engine.lose = 1
            assert await repo.save_round("lost-reply", {"lr00": (0.5, 0.1)}, BatchMetadata(held=["lr00"]))
            engine.lose = 1
            await repo.finalize("lost-reply", BatchState.CANCELLED, "cancelled")
            assert (await ReadModels(real).state_of("lost-reply"))[0] is BatchState.CANCELLED

            assert engine.lost == 9
            assert await MetricsQueries(real).check_invariants("lost-reply") == []  # one event among them
            assert len(await repo.valid_comparisons("lost-reply")) == 2
        finally:
            await real.dispose()

    asyncio.run(go())
