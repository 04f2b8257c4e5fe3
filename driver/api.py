"""The Python API: submit a batch, wait for it, read its status and result, cancel it.

    async with CJClient(settings) as client:      # settings with database_url resolved (driver.runtime)
        batch_id = await client.submit(request_dict)
        result = await client.wait(batch_id, timeout_s=600)

Bad input raises InvalidRequest (naming the field) before anything is stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import ray

from actors import names
from actors.deployment import ensure_coordinator
from cjcore.contracts import (
    TERMINAL_STATES,
    BatchRequest,
    BatchResult,
    BatchState,
    BudgetSource,
    Counters,
    new_batch_id,
    parse_batch_request,
)
from cjcore.errors import BatchNotFound, BatchTimeout
from cjcore.settings import Settings
from storage.database import make_engine
from storage.repository import Repository

Progress = Callable[[BatchState, Counters], None]


def budget_for(request: BatchRequest, settings: Settings) -> tuple[int, BudgetSource]:
    """`max_comparisons` present → runner_override; absent → service_default (never derived from a cap)."""
    if request.max_comparisons is not None:
        return request.max_comparisons, BudgetSource.RUNNER_OVERRIDE
    return settings.default_max_comparisons, BudgetSource.SERVICE_DEFAULT


class CJClient:
    def __init__(self, settings: Settings):
        assert settings.database_url, "resolve the database first (driver.runtime.resolve_database)"
        self.settings = settings
        self._engine = make_engine(settings.database_url, pool_size=2)
        self.repo = Repository(self._engine, settings.database_outage_s)

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> CJClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def submit(self, data: dict[str, Any] | BatchRequest) -> str:
        request = data if isinstance(data, BatchRequest) else parse_batch_request(data)
        batch_id = request.batch_id or new_batch_id()
        budget, source = budget_for(request, self.settings)
        threshold = request.completion_threshold_pct or self.settings.completion_threshold_pct
        await self.repo.create_batch(batch_id, request, budget, source, threshold)
        coordinator = ensure_coordinator(batch_id, self.settings)
        await coordinator.ping.remote()  # surfaces a coordinator that cannot start, now
        return batch_id

    async def status(self, batch_id: str) -> tuple[BatchState, Counters]:
        return await self.repo.state_of(batch_id)

    async def result(self, batch_id: str) -> BatchResult:
        return await self.repo.result(batch_id)

    async def wait(
        self, batch_id: str, timeout_s: float | None = None, progress: Progress | None = None,
        poll_s: float = 0.1,
    ) -> BatchResult:
        """Wait for the batch's completion, failure or cancellation event in the outbox (written in the
        same transaction as the terminal state), reporting progress from the database meanwhile."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            state, counters = await self.repo.state_of(batch_id)
            if progress:
                progress(state, counters)
            event = await self.repo.terminal_event(batch_id) if state in TERMINAL_STATES else None
            if event is not None:
                result = await self.repo.result(batch_id)
                result.extra["event"] = {"id": event["id"], "event_type": event["event_type"]}
                return result
            if deadline is not None and time.monotonic() > deadline:
                raise BatchTimeout(f"batch {batch_id} still {state.value} after {timeout_s:g}s")
            await asyncio.sleep(poll_s)

    async def cancel(self, batch_id: str) -> BatchState:
        state, _ = await self.repo.state_of(batch_id)
        if state in TERMINAL_STATES:
            return state
        coordinator = ensure_coordinator(batch_id, self.settings)
        return BatchState(await coordinator.cancel.remote())

    async def inspect(self, batch_id: str) -> dict[str, Any]:
        report = await self.repo.inspect(batch_id)
        try:
            actor = ray.get_actor(names.coordinator(batch_id), namespace=self.settings.ray_namespace)
            report["coordinator"] = await asyncio.wait_for(actor.snapshot.remote(), 5)
        except (ValueError, ray.exceptions.RayError, TimeoutError):
            report["coordinator"] = None
        return report

    async def health(self, batch_id: str | None = None) -> list[dict[str, Any]]:
        rows = await self.repo.health(batch_id)
        if batch_id is not None and not rows:
            raise BatchNotFound(f"batch {batch_id!r} not found")
        return rows
