"""CoordinatorHost (`cj-coordinators-<i>`): one Ray actor process hosting many batch coordinators.

A batch in progress costs bytes here, not a process: its coordinator (actors/coordinator.py) is an object in
this host's event loop, sharing one database pool and one set of pool handles with the others. The host routes
each message to its batch's coordinator, activating it from PostgreSQL when it is not in memory; a
coordinator with nothing to do but wait for results is passivated (dropped from memory; the database has
everything) after CJ_PASSIVATE_AFTER_S, and its next message activates it again.

Every activation claims the batch with a new fencing epoch, which every write of the batch checks, so an
activation that lost the batch (this host restarted, or the batch was claimed elsewhere) writes nothing more.
A host restarted by Ray rebuilds the batches it held, a bounded number at a time (no rebuild storm). A batch
whose coordinator keeps failing with the same exception type is re-activated with backoff, then ends FAILED
(`internal_error`, naming the exception type) with its one event: nothing loops for ever (invariant 14).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import ray
from ray.exceptions import RayError

from actors import metrics, names
from actors.coordinator import BatchCoordinator, HostContext
from cjcore.batch_metadata import BatchMetadata
from cjcore.contracts import TERMINAL_STATES, BatchState, ComparisonResult
from cjcore.errors import Fenced
from cjcore.settings import Settings
from storage.batch_writes import BatchWrites
from storage.database import make_engine
from storage.read_models import ReadModels
from storage.rulers import RulerStore
from storage.supervision import SupervisionQueries

log = logging.getLogger(__name__)

MAX_FAILURES = 4  # consecutive failures of one kind before a batch ends FAILED internal_error
FAILURE_BACKOFF_S = (1.0, 4.0, 15.0)  # re-activation after the 1st, 2nd, 3rd failure
REAP_EVERY_S = 1.0


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class CoordinatorHost:
    async def __init__(self, index: int, settings: Settings):  # type: ignore[misc]  # Ray awaits async constructors
        assert settings.database_url, "the driver resolves the database URL before creating actors"
        self.name = names.coordinator_host(index)
        self._settings = settings
        metrics.configure(settings.ray_namespace)
        # One pool for every batch of the host (not one per batch: PostgreSQL's max_connections is no bound).
        engine = make_engine(settings.database_url_value(), pool_size=8, max_overflow=8)
        outage_s = settings.database_outage_s
        ns = settings.ray_namespace
        self._writes = BatchWrites(engine, outage_s)
        self._supervision = SupervisionQueries(engine, outage_s)
        self._ctx = HostContext(
            host=self.name, settings=settings, writes=self._writes, reads=ReadModels(engine, outage_s),
            rulers=RulerStore(engine, outage_s),
            workers=[ray.get_actor(names.provider(i), namespace=ns) for i in range(settings.workers)],
            scorers=[ray.get_actor(names.scoring(i), namespace=ns) for i in range(settings.scorers)],
            wake_admission=self._wake_admission,
        )
        self._active: dict[str, BatchCoordinator] = {}
        self._activating: dict[str, asyncio.Task[BatchCoordinator | None]] = {}
        self._passivated: set[str] = set()  # in progress, out of memory, known to this incarnation
        self._failures: dict[str, tuple[str, int]] = {}  # batch → (exception type, consecutive failures)
        self._slots = asyncio.Semaphore(settings.activation_concurrency)
        self.counts = {"activations": 0, "passivations": 0, "fenced": 0, "failures": 0}
        self._activation_s: deque[float] = deque(maxlen=1000)  # recent activation times (stats)
        loop = asyncio.get_running_loop()
        self._reaper = loop.create_task(self._reap())
        self._recovery = loop.create_task(self._recover())

    # -- messages to a batch ---------------------------------------------------------------------------

    async def activate(self, batch_id: str) -> str | None:
        """Admission (or anyone): make sure the batch is in progress here; its state, None if not admitted or
        terminal."""
        c = await self._get(batch_id)
        return None if c is None else c.state.value

    async def record_results(self, batch_id: str, results: list[ComparisonResult]) -> int:
        """A worker's results for the batch; the reply (after the commit) is the acknowledgement. A batch that
        is terminal takes nothing more: 0, and the worker lets them go."""
        c = await self._get(batch_id)
        if c is None:
            return 0
        try:
            return await c.record_results(results)
        except Fenced:
            self._lost(batch_id, c)
            raise

    async def record_many(self, results: list[ComparisonResult]) -> list[str]:
        """A worker's results for any of this host's batches, in one call; returns the correlation ids
        acknowledged (committed, or of a batch that takes nothing more). A batch whose coordinator fails to
        record its part leaves those out, and the worker sends them again."""
        by_batch: dict[str, list[ComparisonResult]] = {}
        for r in results:
            by_batch.setdefault(r.batch_id, []).append(r)

        async def one(batch_id: str, part: list[ComparisonResult]) -> list[str]:
            try:
                await self.record_results(batch_id, part)
            except Exception as exc:  # this batch's part is re-sent; the others are acknowledged
                log.warning("%s: batch %s: %d results not recorded (%s)", self.name, batch_id, len(part),
                            type(exc).__name__, extra={"batch_id": batch_id})
                return []
            return [r.correlation_id for r in part]

        acked = await asyncio.gather(*(one(b, part) for b, part in by_batch.items()))
        return [cid for part in acked for cid in part]

    async def expire(self, batch_id: str, correlation_ids: list[str], limit_s: float) -> int:
        c = await self._get(batch_id)
        return 0 if c is None else await c.expire(correlation_ids, limit_s)

    async def cancel(self, batch_id: str) -> str | None:
        c = await self._get(batch_id)
        return None if c is None else await c.cancel()

    async def nudge(self, batch_id: str) -> str:
        """Supervisor: the batch looks idle. A passivated batch waits for results its workers hold (lost ones are
        the Supervisor's expiry to find), so it is left out of memory."""
        if batch_id in self._passivated and batch_id not in self._active:
            return "passivated"
        c = await self._get(batch_id)
        return "terminal" if c is None else c.nudge()

    async def restart(self, batch_id: str) -> str | None:
        """Supervisor: the batch's coordinator did not answer; activate it anew (the old one is fenced)."""
        old = self._active.pop(batch_id, None)
        if old is not None:
            old.stop()
        c = await self._get(batch_id, recovering=True)
        return None if c is None else c.state.value

    async def snapshot(self, batch_id: str) -> dict[str, Any] | None:
        """The coordinator's view of its batch, if it is in memory here (without activating it)."""
        c = self._active.get(batch_id)
        if c is not None:
            return c.snapshot()
        return {"host": self.name, "passivated": True} if batch_id in self._passivated else None

    async def adopt(self, batch_ids: list[str]) -> int:
        """Supervisor: of these admitted batches routed here, activate those this host does not know (neither in
        memory nor passivated by it): lost with an earlier incarnation, or never started. Returns how many."""
        unknown = [b for b in batch_ids
                   if b not in self._active and b not in self._passivated and b not in self._activating]
        started = await asyncio.gather(*(self._get(b, recovering=True) for b in unknown), return_exceptions=True)
        return sum(1 for c in started if isinstance(c, BatchCoordinator))

    async def stats(self) -> dict[str, Any]:
        times = sorted(self._activation_s)
        return {"host": self.name, "active": len(self._active), "passivated": len(self._passivated),
                "activating": len(self._activating), **self.counts,
                "activation_ms_p50": round(1000 * times[len(times) // 2], 2) if times else None}

    # -- activation, passivation, failure ---------------------------------------------------------------

    async def _get(self, batch_id: str, recovering: bool | None = None) -> BatchCoordinator | None:
        c = self._active.get(batch_id)
        if c is not None:
            return c
        task = self._activating.get(batch_id)
        if task is None:  # one activation at a time per batch; every caller waits for the same one
            rec = batch_id not in self._passivated if recovering is None else recovering
            task = asyncio.get_running_loop().create_task(self._activate(batch_id, rec))
            self._activating[batch_id] = task
        return await asyncio.shield(task)

    async def _activate(self, batch_id: str, recovering: bool) -> BatchCoordinator | None:
        try:
            async with self._slots:
                started = time.perf_counter()
                c = await BatchCoordinator.activate(self._ctx, batch_id, recovering)
                self._activation_s.append(time.perf_counter() - started)
            self._passivated.discard(batch_id)
            if c is None or c.state in TERMINAL_STATES:
                self._forget(batch_id)
                return None
            self.counts["activations"] += 1
            self._active[batch_id] = c
            c.start().add_done_callback(lambda t: self._ended(batch_id, c, t))
            return c
        finally:
            self._activating.pop(batch_id, None)

    def _ended(self, batch_id: str, c: BatchCoordinator, task: asyncio.Task[None]) -> None:
        if self._active.get(batch_id) is c:
            del self._active[batch_id]
        if task.cancelled():  # passivated or replaced
            return
        exc = task.exception()
        if exc is None:  # terminal
            self._forget(batch_id)
            return
        if isinstance(exc, Fenced):
            self._lost(batch_id, c)
            return
        self._failed(batch_id, exc)

    def _lost(self, batch_id: str, c: BatchCoordinator) -> None:
        """Another activation holds the batch: this one stops and forgets it."""
        self.counts["fenced"] += 1
        c.stop()
        if self._active.get(batch_id) is c:
            del self._active[batch_id]
        self._passivated.discard(batch_id)
        log.warning("%s: batch %s is held by a newer activation (epoch %d is stale); dropped here", self.name,
                    batch_id, c.epoch, extra={"batch_id": batch_id})

    def _failed(self, batch_id: str, exc: BaseException) -> None:
        kind = type(exc).__name__
        last, n = self._failures.get(batch_id, (kind, 0))
        n = n + 1 if last == kind else 1
        self._failures[batch_id] = (kind, n)
        self.counts["failures"] += 1
        log.error("%s: batch %s: coordinator failed (%s: %s), %d time(s) in a row", self.name, batch_id, kind, exc,
                  n, exc_info=exc, extra={"batch_id": batch_id})
        loop = asyncio.get_running_loop()
        if n >= MAX_FAILURES:
            loop.create_task(self._give_up(batch_id, kind, str(exc)))
        else:
            loop.call_later(FAILURE_BACKOFF_S[min(n, len(FAILURE_BACKOFF_S)) - 1],
                            lambda: loop.create_task(self._get(batch_id, recovering=True)))

    async def _give_up(self, batch_id: str, kind: str, detail: str) -> None:
        claim = await self._writes.claim(batch_id, self.name)
        if claim is not None:
            error = f"internal_error: {kind}: {detail[:300]} (failed {MAX_FAILURES} times in a row)"
            await self._writes.finalize(batch_id, BatchState.FAILED, "internal_error", meta=BatchMetadata(error=error),
                                        epoch=claim[0])
            log.error("%s: batch %s ended FAILED: %s", self.name, batch_id, error, extra={"batch_id": batch_id})
        self._forget(batch_id)
        self._wake_admission()

    def _forget(self, batch_id: str) -> None:
        self._passivated.discard(batch_id)
        self._failures.pop(batch_id, None)

    async def _reap(self) -> None:
        """Passivate what has waited CJ_PASSIVATE_AFTER_S with nothing to do."""
        after = self._settings.passivate_after_s
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            now = time.monotonic()
            for batch_id, c in list(self._active.items()):
                idle = c.idle_s(now)
                if idle is not None and idle >= after:
                    del self._active[batch_id]
                    c.stop()
                    self._passivated.add(batch_id)
                    self.counts["passivations"] += 1

    async def _recover(self) -> None:
        """A restarted host rebuilds the batches it held (bounded by the activation slots)."""
        try:
            owned = await self._supervision.owned_by(self.name, self._settings.ray_namespace)
        except Exception:  # the Supervisor's sweep adopts them instead
            log.exception("%s: could not list the batches it held", self.name)
            return
        if owned:
            log.warning("%s: rebuilding %d batches it held", self.name, len(owned))
            await asyncio.gather(*(self._get(b, recovering=True) for b in owned), return_exceptions=True)

    def _wake_admission(self) -> None:
        with contextlib.suppress(ValueError, RayError):
            ray.get_actor(names.ADMISSION, namespace=self._settings.ray_namespace).wake.remote()
