"""Supervisor: one detached actor for recovery only; the normal path never needs it.

Each interval (CJ_SUPERVISOR_INTERVAL_S) it:
- makes sure every admitted, non-terminal batch of its deployment is known to its coordinator host (in
  memory or passivated there), which activates it from the database if it is not;
- checks on batches idle for CJ_BATCH_IDLE_S: their coordinator is nudged, and activated anew (rehydrating
  from the database; the old activation is fenced) if it does not answer within 30 s;
- expires pairs without a result for CJ_MAX_PROCESSING_SECONDS that no provider worker holds (a worker
  holds what it has queued, is sending or is delivering: its lease) as QUEUE_TIMEOUT error results, recorded
  through the batch's coordinator like any result (which retries them as new attempts): lost work only;
- writes the outbox event of any terminal batch that lacks one, and flags COMPLETED batches with anchors
  but no grade projections.
Each batch is handled on its own, with a time limit. Each action is logged and counted (`stats`). It
holds no state of its own: everything it acts on is read
from PostgreSQL each time, so a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import ray
from ray.exceptions import RayError

from actors import metrics, names
from actors.activation import host_for
from cjcore.settings import Settings
from storage.database import make_engine
from storage.supervision import SupervisionQueries

log = logging.getLogger(__name__)

NUDGE_TIMEOUT_S = 30.0  # a coordinator still starting on a busy node is slow to answer, not hung
BATCH_ACTION_TIMEOUT_S = 60.0  # one batch's nudge or expiry; past it that batch waits for the next sweep


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class Supervisor:
    async def __init__(self, settings: Settings):  # type: ignore[misc]  # Ray awaits async constructors
        assert settings.database_url
        self._settings = settings
        metrics.configure(settings.ray_namespace)
        self._repo = SupervisionQueries(make_engine(settings.database_url_value(), pool_size=2),
                                        settings.database_outage_s)
        self.actions: Counter[str] = Counter()
        self.last_run_at: float | None = None
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def deployment_settings(self) -> dict[str, object]:
        """The deployment's settings without secrets: how a driver elsewhere in the cluster (or given only the
        Ray address) finds the database and the provider (with a database password, it brings CJ_DATABASE_URL)."""
        return self._settings.public()

    async def run_once(self, max_processing_seconds: float | None = None) -> dict[str, int]:
        """One sweep; returns what it did. An operator (or a test) may pass a shorter expiry age. Each batch
        is handled on its own with a time limit: one broken batch never stops a sweep."""
        limit = self._settings.max_processing_seconds if max_processing_seconds is None else max_processing_seconds
        done: Counter[str] = Counter()
        await self._adopt(await self._repo.active_batch_ids(self._settings.ray_namespace), done)
        idle = await self._repo.idle_batch_ids(self._settings.batch_idle_s, self._settings.ray_namespace,
                                               self._settings.batch_poll_max_s or 0.0)
        await self._each(idle, self._check_idle, done, "nudge")
        stuck = await self._unheld(await self._repo.stuck_pairs(limit, self._settings.ray_namespace))
        await self._each(list(stuck), lambda b: self._expire(b, stuck[b], limit), done, "expire")
        for batch_id in await self._repo.repair_missing_events():
            done["events_repaired"] += 1
            log.warning("supervisor: batch %s: terminal without an outbox event; event written", batch_id)
        for batch_id in await self._repo.completed_without_projections():
            done["flagged_no_projections"] += 1
            log.error("supervisor: batch %s: COMPLETED with anchors but no grade projections", batch_id)
        self.actions.update(done)
        self.last_run_at = time.time()
        metrics.inc("cj_supervisor_actions_total", action="sweep")
        for action, n in done.items():
            metrics.inc("cj_supervisor_actions_total", n, action=action)
        metrics.set_gauge("cj_supervisor_last_run_timestamp", self.last_run_at)
        return dict(done)

    async def _each(self, batch_ids: list[str], handle: Callable[[str], Awaitable[Counter[str]]],
                    done: Counter[str], what: str) -> None:
        """Handle every batch concurrently, each with its own time limit and its own failure."""
        async def one(batch_id: str) -> None:
            try:
                done.update(await asyncio.wait_for(handle(batch_id), BATCH_ACTION_TIMEOUT_S))
            except Exception as exc:  # logged and counted; the sweep goes on
                done[f"{what}_failed"] += 1
                log.warning("supervisor: batch %s: %s failed (%s: %s)", batch_id, what, type(exc).__name__, exc,
                            extra={"batch_id": batch_id})

        await asyncio.gather(*(one(b) for b in batch_ids))

    async def _adopt(self, batch_ids: list[str], done: Counter[str]) -> None:
        """Each host activates the batches routed to it that it does not know (lost with an earlier
        incarnation, or never activated)."""
        by_host: dict[str, list[str]] = {}
        for b in batch_ids:
            by_host.setdefault(names.coordinator_host(names.host_index(b, self._settings.coordinator_hosts or 1)),
                               []).append(b)
        for host, part in by_host.items():
            try:
                handle = ray.get_actor(host, namespace=self._settings.ray_namespace)
                adopted: int = await asyncio.wait_for(handle.adopt.remote(part), BATCH_ACTION_TIMEOUT_S)
            except (RayError, TimeoutError, ValueError) as exc:
                done["adopt_failed"] += 1
                log.warning("supervisor: %s could not adopt its batches (%s)", host, type(exc).__name__)
                continue
            if adopted:
                done["coordinators_recreated"] += adopted
                log.warning("supervisor: %s: %d batches it did not hold activated from the database", host, adopted)

    async def _check_idle(self, batch_id: str) -> Counter[str]:
        host = host_for(batch_id, self._settings)
        try:
            await asyncio.wait_for(host.nudge.remote(batch_id), NUDGE_TIMEOUT_S)
            return Counter(nudged=1)
        except (RayError, TimeoutError) as exc:
            await host.restart.remote(batch_id)
            log.warning("supervisor: batch %s: coordinator did not answer (%s); activated anew", batch_id,
                        type(exc).__name__)
            return Counter(coordinators_restarted=1)

    async def _unheld(self, stuck: dict[str, list[str]]) -> dict[str, list[str]]:
        """Leave out what a live worker holds (its lease): only lost work is expired. If a worker cannot say
        (restarting, unreachable), expire nothing this sweep rather than pay twice for what it holds."""
        if not stuck:
            return {}
        cids = [c for part in stuck.values() for c in part]
        workers = [ray.get_actor(names.provider(i), namespace=self._settings.ray_namespace)
                   for i in range(self._settings.workers)]
        try:
            held: list[list[str]] = await asyncio.wait_for(
                asyncio.gather(*(w.held.remote(cids) for w in workers)), NUDGE_TIMEOUT_S)
        except (RayError, TimeoutError) as exc:
            log.warning("supervisor: the pool could not say what it holds (%s); no expiry this sweep",
                        type(exc).__name__)
            return {}
        leased = {c for part in held for c in part}
        unheld = {b: [c for c in part if c not in leased] for b, part in stuck.items()}
        return {b: part for b, part in unheld.items() if part}

    async def _expire(self, batch_id: str, cids: list[str], limit: float) -> Counter[str]:
        expired = await host_for(batch_id, self._settings).expire.remote(batch_id, cids, limit)
        # Whatever reached a worker's queue since we asked is dropped there, never sent.
        for i in range(self._settings.workers):
            with contextlib.suppress(RayError, ValueError):
                ray.get_actor(names.provider(i), namespace=self._settings.ray_namespace).forget.remote(cids)
        log.warning("supervisor: batch %s: expired %d pairs no worker holds", batch_id, expired)
        return Counter(expired=expired)

    async def stats(self) -> dict[str, object]:
        return {"actions": dict(self.actions), "last_run_at": self.last_run_at}

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.supervisor_interval_s)
            try:
                await self.run_once()
            except Exception:  # a failed sweep is retried next interval; never kill the supervisor
                log.exception("supervisor sweep failed")
