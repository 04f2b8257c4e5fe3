"""Admission (`cj-admission`): starts coordinators for QUEUED batches, at most CJ_MAX_LIVE_BATCHES live and
CJ_ADMISSION_START_CONCURRENCY starting at a time, in the order of `cjcore.admission.order`.

It is woken when a batch is submitted and when a coordinator exits, and looks again every
ADMISSION_POLL_S anyway (a wake-up lost with a restart costs at most that). It keeps no state of its own:
the queue and the live count are read from PostgreSQL each pass, so a restart loses nothing; a batch
admitted (INITIALIZING) whose coordinator was never created is re-created by the Supervisor's sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import ray
from ray.exceptions import RayError

from actors import metrics
from actors.activation import ensure_coordinator
from cjcore import admission
from cjcore.settings import Settings
from storage.database import make_engine
from storage.queue import BatchQueue

log = logging.getLogger(__name__)

ADMISSION_POLL_S = 2.0
START_TIMEOUT_S = 300.0  # a coordinator not up by then is left to the Supervisor (it still counts as live)


def resolve_max_live(settings: Settings) -> int:
    """CJ_MAX_LIVE_BATCHES, or the default from the cluster's CPUs and schedulable memory."""
    if settings.max_live_batches is not None:
        return settings.max_live_batches
    resources = ray.cluster_resources()
    return admission.default_max_live(resources.get("CPU", 1.0), resources.get("memory", 2**30))


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class Admission:
    async def __init__(self, settings: Settings):  # type: ignore[misc]  # Ray awaits async constructors
        assert settings.database_url
        self._settings = settings
        metrics.configure(settings.ray_namespace)
        self._queue = BatchQueue(make_engine(settings.database_url, pool_size=2), settings.ray_namespace,
                                 settings.database_outage_s)
        self.max_live = resolve_max_live(settings)
        self._starting: set[str] = set()
        self._wake = asyncio.Event()
        self.admitted = 0
        self._task = asyncio.get_running_loop().create_task(self._loop())
        log.info("admission: at most %d live batches, %d starting at a time", self.max_live,
                 settings.admission_start_concurrency)

    async def wake(self) -> None:
        """A batch was submitted, or a coordinator is leaving: look at the queue now."""
        self._wake.set()

    async def stats(self) -> dict[str, int]:
        return {"max_live": self.max_live, "live": await self._queue.live(), "starting": len(self._starting),
                "queued": len(await self._queue.queued()), "admitted": self.admitted}

    async def admit_once(self) -> list[str]:
        """One pass: admit what fits now, in queue order; returns the batch ids admitted."""
        s = self._settings
        room = admission.to_admit(await self._queue.live(), len(self._starting), self.max_live,
                                  s.admission_start_concurrency)
        if room == 0:
            return []
        admitted: list[str] = []
        for q in admission.order(await self._queue.queued(), s.admission_aging_per_s):
            if len(admitted) == room:
                break
            if await self._queue.admit(q.batch_id):
                admitted.append(q.batch_id)
                metrics.observe("cj_admission_wait_seconds", q.waited_s)
                self._starting.add(q.batch_id)
                asyncio.get_running_loop().create_task(self._start(q.batch_id))
        self.admitted += len(admitted)
        return admitted

    async def _start(self, batch_id: str) -> None:
        started = time.monotonic()
        try:
            await asyncio.wait_for(ensure_coordinator(batch_id, self._settings).ping.remote(), START_TIMEOUT_S)
            log.info("admission: batch %s admitted; coordinator up in %.1fs", batch_id, time.monotonic() - started,
                     extra={"batch_id": batch_id})
        except (RayError, TimeoutError) as exc:
            log.warning("admission: coordinator of batch %s not up (%s); the Supervisor will see to it",
                        batch_id, type(exc).__name__, extra={"batch_id": batch_id})
        finally:
            self._starting.discard(batch_id)
            self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), ADMISSION_POLL_S)
            self._wake.clear()
            try:
                await self.admit_once()
            except Exception:  # a failed pass is retried at the next wake-up or poll
                log.exception("admission pass failed")
