"""Supervisor: one detached actor for recovery only; the normal path never needs it.

Each interval (CJ_SUPERVISOR_INTERVAL_S) it:
- makes sure every non-terminal batch has a coordinator, re-creating it from the database if it is gone;
- checks on batches idle for CJ_BATCH_IDLE_S: their coordinator is nudged, and restarted (rehydrating
  from the database) if it does not answer within 10 s;
- expires pairs without a result for CJ_MAX_PROCESSING_SECONDS as QUEUE_TIMEOUT error results, recorded
  through the batch's coordinator like any result (which retries them as new attempts);
- writes the outbox event of any terminal batch that lacks one, and flags COMPLETED batches with anchors
  but no grade projections.
Each action is logged and counted (`stats`). It holds no state of its own: everything it acts on is read
from PostgreSQL each time, so a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import ray
from ray.exceptions import RayError

from actors import metrics, names
from actors.activation import ensure_coordinator
from cjcore.settings import Settings
from storage.database import make_engine
from storage.repository import Repository

log = logging.getLogger(__name__)

NUDGE_TIMEOUT_S = 30.0  # a coordinator still starting on a busy node is slow to answer, not hung


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class Supervisor:
    async def __init__(self, settings: Settings):
        assert settings.database_url
        self._settings = settings
        metrics.configure(settings.ray_namespace)
        self._repo = Repository(make_engine(settings.database_url, pool_size=2), settings.database_outage_s)
        self.actions: Counter[str] = Counter()
        self.last_run_at: float | None = None
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def deployment_settings(self) -> dict[str, object]:
        """The deployment's settings without the API key: how a driver elsewhere in the cluster (or given
        only the Ray address) finds the database and the provider."""
        return self._settings.model_dump(mode="json", exclude={"anthropic_api_key"})

    async def run_once(self, max_processing_seconds: float | None = None) -> dict[str, int]:
        """One sweep; returns what it did. An operator (or a test) may pass a shorter expiry age."""
        limit = self._settings.max_processing_seconds if max_processing_seconds is None else max_processing_seconds
        done: Counter[str] = Counter()
        for batch_id in await self._repo.active_batch_ids():
            try:
                ray.get_actor(names.coordinator(batch_id), namespace=self._settings.ray_namespace)
            except ValueError:
                ensure_coordinator(batch_id, self._settings)
                done["coordinators_recreated"] += 1
                log.warning("supervisor: batch %s had no coordinator; re-created from the database", batch_id)
        for batch_id in await self._repo.idle_batch_ids(self._settings.batch_idle_s):
            coordinator = ensure_coordinator(batch_id, self._settings)
            try:
                await asyncio.wait_for(coordinator.nudge.remote(), NUDGE_TIMEOUT_S)
                done["nudged"] += 1
            except (RayError, TimeoutError) as exc:
                ray.kill(coordinator, no_restart=False)
                done["coordinators_restarted"] += 1
                log.warning("supervisor: batch %s: coordinator did not answer (%s); restarted", batch_id,
                            type(exc).__name__)
        stuck = await self._repo.stuck_pairs(limit)
        for batch_id, cids in stuck.items():
            coordinator = ensure_coordinator(batch_id, self._settings)
            expired = await coordinator.expire.remote(cids, limit)
            done["expired"] += expired
            log.warning("supervisor: batch %s: expired %d pairs without a result", batch_id, expired)
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

    async def stats(self) -> dict[str, object]:
        return {"actions": dict(self.actions), "last_run_at": self.last_run_at}

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.supervisor_interval_s)
            try:
                await self.run_once()
            except Exception:  # a failed sweep is retried next interval; never kill the supervisor
                log.exception("supervisor sweep failed")
