"""Admission (`cj-admission`): puts QUEUED batches in progress on their coordinator hosts, at most
CJ_MAX_LIVE_BATCHES at once (by default what a quarter of the cluster's memory holds) and, in Messages mode, only
while the comparisons waiting for the provider are under CJ_ADMISSION_BACKLOG_S seconds of its rate limit
(admission by work, cjcore/admission.py), in the order of `cjcore.admission.order`.

It is woken when a batch is submitted and when a batch ends, and looks again every ADMISSION_POLL_S anyway (a
wake-up lost with a restart costs at most that). It keeps no state of its own: the queue, the batches in
progress and their backlog are read from PostgreSQL each pass, so a restart loses nothing; a batch admitted
(INITIALIZING) whose host never activated it is adopted by the Supervisor's sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import ray
from ray.exceptions import RayError

from actors import metrics
from actors.activation import host_for
from cjcore import admission
from cjcore.settings import Settings
from storage.database import make_engine
from storage.queue import BatchQueue

log = logging.getLogger(__name__)

ADMISSION_POLL_S = 2.0
START_TIMEOUT_S = 120.0  # an activation not done by then is left to the Supervisor (it still counts as live)


def resolve_max_live(settings: Settings) -> tuple[int, str]:
    """CJ_MAX_LIVE_BATCHES, or the default from the cluster's schedulable memory; and why."""
    if settings.max_live_batches is not None:
        return settings.max_live_batches, "CJ_MAX_LIVE_BATCHES"
    memory = ray.cluster_resources().get("memory", 2**30)
    return admission.default_max_live(memory), (
        f"a quarter of the cluster's {memory / 2**30:.1f} GiB schedulable memory at "
        f"{admission.MEMORY_PER_LIVE_BATCH_BYTES / 2**20:g} MiB a batch")


def backlog_target(settings: Settings) -> float | None:
    """Comparisons waiting for the provider that keep it at its limit (None in Message Batches mode: those wait
    at the provider, not at our rate limit)."""
    if settings.provider_mode == "batches":
        return None
    return settings.requests_per_minute / 60 * settings.admission_backlog_s


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class Admission:
    async def __init__(self, settings: Settings):  # type: ignore[misc]  # Ray awaits async constructors
        assert settings.database_url
        self._settings = settings
        metrics.configure(settings.ray_namespace)
        self._queue = BatchQueue(make_engine(settings.database_url_value(), pool_size=2), settings.ray_namespace,
                                 settings.database_outage_s)
        self.max_live, self._why = resolve_max_live(settings)
        self._target = backlog_target(settings)
        self._starting: set[str] = set()
        self._wake = asyncio.Event()
        self.admitted = 0
        self._task = asyncio.get_running_loop().create_task(self._loop())
        log.info("admission: at most %d batches in progress (%s); backlog target %s comparisons", self.max_live,
                 self._why, "none" if self._target is None else f"{self._target:.0f}")

    async def wake(self) -> None:
        """A batch was submitted, or one ended: look at the queue now."""
        self._wake.set()

    async def hosts(self) -> int:
        """The deployment's coordinator host count (a driver routes a batch's messages with it)."""
        assert self._settings.coordinator_hosts
        return self._settings.coordinator_hosts

    async def stats(self) -> dict[str, Any]:
        s = self._settings
        return {"max_live": self.max_live, "max_live_why": self._why, "live": await self._queue.live(),
                "starting": len(self._starting), "queued": len(await self._queue.queued()),
                "admitted": self.admitted, "backlog": await self._queue.backlog(s.round_pairs_per_essay),
                "backlog_target": None if self._target is None else round(self._target),
                "backlog_why": "Message Batches: memory only" if self._target is None else
                f"{s.admission_backlog_s:g} s of {s.requests_per_minute}/min (CJ_ADMISSION_BACKLOG_S)"}

    async def admit_once(self) -> list[str]:
        """One pass: admit what fits now, in queue order; returns the batch ids admitted."""
        s = self._settings
        room = admission.to_admit(await self._queue.live(), len(self._starting), self.max_live,
                                  s.admission_start_concurrency)
        if room == 0:
            return []
        backlog = await self._queue.backlog(s.round_pairs_per_essay) if self._target is not None else 0
        admitted: list[str] = []
        for q in admission.admit_by_work(admission.order(await self._queue.queued(), s.admission_aging_per_s), room,
                                         backlog, self._target, s.round_pairs_per_essay):
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
            await asyncio.wait_for(host_for(batch_id, self._settings).activate.remote(batch_id), START_TIMEOUT_S)
            log.debug("admission: batch %s admitted; in progress after %.3fs", batch_id, time.monotonic() - started,
                      extra={"batch_id": batch_id})
        except (RayError, TimeoutError, ValueError) as exc:
            log.warning("admission: batch %s not activated (%s); the Supervisor will see to it",
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
