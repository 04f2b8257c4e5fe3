"""The Python API: submit a batch, wait for it, read its status and result, cancel it.

    async with CJClient(settings) as client:      # settings with database_url resolved (driver.runtime)
        batch_id = await client.submit(request_dict)
        result = await client.wait(batch_id, timeout_s=600)

Bad input raises InvalidRequest (naming the field) before anything is stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import ray

from actors import names
from cjcore import admission, rulers
from cjcore import report as report_data
from cjcore.contracts import (
    GRADE_SCALE,
    TERMINAL_STATES,
    BatchRequest,
    BatchResult,
    BatchState,
    BudgetSource,
    Counters,
    check_bounds,
    new_batch_id,
    parse_batch_request,
)
from cjcore.errors import BatchNotFound, BatchTimeout, CJError, DeploymentNotFound, InvalidRequest
from cjcore.grade_projection import Anchor, boundaries
from cjcore.settings import Settings
from storage.batch_writes import BatchWrites
from storage.database import make_engine
from storage.message_batches import MessageBatchStore
from storage.metrics import MetricsQueries
from storage.read_models import ReadModels
from storage.records import NewBatch
from storage.rulers import RulerStore

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
        outage_s = settings.database_outage_s
        self.writes = BatchWrites(self._engine, outage_s)  # creating, cancelling
        self.reads = ReadModels(self._engine, outage_s)  # results, status, inspection
        self.message_batches = MessageBatchStore(self._engine, outage_s)
        self.metrics = MetricsQueries(self._engine, outage_s)  # invariants, load reports
        self.rulers = RulerStore(self._engine, outage_s)
        self._hosts: int | None = None

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> CJClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def submit(self, data: dict[str, Any] | BatchRequest) -> str:
        return (await self.submit_many([data]))[0]

    async def submit_many(self, data: Sequence[dict[str, Any] | BatchRequest]) -> list[str]:
        """Validate every request, then store them all QUEUED in one transaction (all or none) and wake
        the deployment's admission, which starts their coordinators as room allows."""
        s = self.settings
        requests = [d if isinstance(d, BatchRequest) else parse_batch_request(d) for d in data]
        new = []
        for request in requests:
            check_bounds(request, s.max_essays_per_batch, s.max_essay_chars)
            budget, source = budget_for(request, self.settings)
            threshold = request.completion_threshold_pct or self.settings.completion_threshold_pct
            resolved = await self._resolve_grades(request)  # the request itself is stored as it came
            ruler = await self._ruler_for(resolved)
            essays = rulers.link(resolved, ruler) if ruler else resolved.essays if resolved is not request else ()
            new.append(NewBatch(request.batch_id or new_batch_id(), request, budget, source, threshold,
                                essays=essays, anchor_set_id=ruler.anchor_set_id if ruler else None,
                                target_reliability=request.target_reliability or s.target_reliability))
        ids = [b.batch_id for b in new]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise InvalidRequest("batch_id", f"{dup!r} appears more than once in this submission")
        await self.writes.create_batches(new, self.settings.ray_namespace, uuid.uuid4().hex)
        self._admission().wake.remote()  # fire and forget: admission also looks every few seconds
        return ids

    async def _resolve_grades(self, request: BatchRequest) -> BatchRequest:
        """An anchor's grade in DESIGN §4.1's order: its `known_grade`, else its `anchor_ref_id` in the registry.
        An anchor with neither is refused naming the field (it could never be projected from)."""
        missing = [(i, e) for i, e in enumerate(request.essays)
                   if e.is_anchor and e.known_grade is None and not e.cites_registry]
        if not missing:
            return request
        found = await self.rulers.grades_of([e.anchor_ref_id or "" for _, e in missing])
        essays = list(request.essays)
        for i, e in missing:
            grades = found.get(e.anchor_ref_id or "", set())
            if len(grades) != 1:
                why = ("is not a registered anchor" if not grades else
                       f"is registered with several grades ({', '.join(sorted(grades))})")
                raise InvalidRequest(f"essays[{i}].known_grade", f"an anchor needs a known grade: anchor_ref_id "
                                     f"{e.anchor_ref_id!r} {why}")
            essays[i] = e.model_copy(update={"known_grade": next(iter(grades))})
        return request.model_copy(update={"essays": essays})

    async def _ruler_for(self, request: BatchRequest) -> rulers.Ruler | None:
        """The registered set a request is graded against: the one it names, else the one every anchor it
        cites by anchor_ref_id (with no text) belongs to. Refused naming the field when there is none."""
        if request.anchor_set_id is not None:
            ruler = await self.rulers.get(request.anchor_set_id)
            if ruler is None:
                raise InvalidRequest("anchor_set_id", f"no anchor set {request.anchor_set_id!r} is registered "
                                     "(launch.py anchors register FILE)")
            return ruler
        refs = rulers.cited_refs(request)
        if not refs:
            return None
        found = await self.rulers.sets_with(refs)
        common: set[str] | None = None
        for i, e in enumerate(request.essays):
            if e.cites_registry:
                sets = set(found.get(e.anchor_ref_id or "", []))
                if not sets:
                    raise InvalidRequest(f"essays[{i}].anchor_ref_id",
                                         f"{e.anchor_ref_id!r} is not a registered anchor (and the essay has no text)")
                common = sets if common is None else common & sets
        if not common or len(common) > 1:
            raise InvalidRequest("anchor_set_id", "the cited anchors are not all in exactly one registered set "
                                 f"({', '.join(sorted(common or [])) or 'none in common'}); name it in anchor_set_id")
        return await self.rulers.get(common.pop())

    async def register_anchor_set(self, data: Any, timeout_s: float | None = None,
                                  progress: Progress | None = None) -> dict[str, Any]:
        """Calibrate an anchor set through the deployment (a batch of its anchors only, DESIGN §4.6) and
        store its anchors' scores and SEs and its grade boundaries. Nothing is stored unless it completes."""
        anchor_set = rulers.parse_anchor_set(data)
        rulers.check_anchor_bounds(anchor_set, self.settings.max_essay_chars)
        set_id = anchor_set.anchor_set_id
        if used := await self.rulers.used_by(set_id):  # before paying for a calibration that cannot be stored
            raise rulers.in_use(set_id, used)
        batch_id = await self.submit(rulers.calibration_request(anchor_set, f"ruler-{set_id}-{uuid.uuid4().hex[:8]}"))
        result = await self.wait(batch_id, timeout_s=timeout_s, progress=progress)
        if result.state is not BatchState.COMPLETED:
            raise CJError(f"anchor set {set_id!r}: calibration batch {batch_id} ended {result.state.value}"
                          f" ({result.error or result.completion_reason}); nothing stored")
        scores = {r.essay_id: (r.score, r.se) for r in result.rankings}
        grades, cuts = boundaries([Anchor(a.anchor_ref_id, a.known_grade, *scores[a.anchor_ref_id])
                                   for a in anchor_set.anchors], GRADE_SCALE)
        await self.rulers.save(anchor_set, batch_id, scores, grades, cuts, result.reliability.ssr)
        return await self.rulers.show(set_id) or {}

    def _admission(self) -> ray.actor.ActorHandle:
        try:
            return ray.get_actor(names.ADMISSION, namespace=self.settings.ray_namespace)
        except ValueError:
            raise DeploymentNotFound(
                f"no deployment in Ray namespace {self.settings.ray_namespace!r} (its {names.ADMISSION} actor is "
                "missing): start one with `launch.py up`"
            ) from None

    async def status(self, batch_id: str) -> tuple[BatchState, Counters]:
        return await self.reads.state_of(batch_id)

    async def result(self, batch_id: str) -> BatchResult:
        return await self.reads.result(batch_id)

    async def wait(
        self, batch_id: str, timeout_s: float | None = None, progress: Progress | None = None,
        poll_s: float = 0.1,
    ) -> BatchResult:
        """Wait for the batch's completion, failure or cancellation event in the outbox (written in the
        same transaction as the terminal state), reporting progress from the database meanwhile."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            state, counters = await self.reads.state_of(batch_id)
            if progress:
                progress(state, counters)
            event = await self.reads.terminal_event(batch_id) if state in TERMINAL_STATES else None
            if event is not None:
                result = await self.reads.result(batch_id)
                result.extra["event"] = {"id": event["id"], "event_type": event["event_type"]}
                return result
            if deadline is not None and time.monotonic() > deadline:
                raise BatchTimeout(f"batch {batch_id} still {state.value} after {timeout_s:g}s",
                                   correlation_id=batch_id)
            await asyncio.sleep(poll_s)

    async def export(self, batch_id: str) -> dict[str, Any]:
        """The decision record (driver.export): the result and every attempt."""
        from driver import export

        attempts = await self.reads.attempts(batch_id)
        return export.document(await self.result(batch_id), attempts)

    async def report(self, batch_id: str) -> report_data.Report:
        """What the report page shows (cjcore.report): the decision record, and the progress while it runs."""
        attempts = await self.reads.attempts(batch_id)
        result = await self.result(batch_id)
        rows = [] if result.state in TERMINAL_STATES else await self.reads.health(batch_id)
        status = rows[0] if rows else None
        return report_data.build(result, attempts, status)

    async def batches(self, newest: int | None = None) -> list[dict[str, Any]]:
        """The `status` list (cj_batch_health rows), oldest first; `newest`: only that many, newest first."""
        return await self.reads.health(newest=newest)

    async def cancel(self, batch_id: str) -> BatchState:
        state, _ = await self.reads.state_of(batch_id)
        if state in TERMINAL_STATES:
            return state
        if state is BatchState.QUEUED and await self.writes.finalize(
                batch_id, BatchState.CANCELLED, "cancelled", only_from=BatchState.QUEUED) is not None:
            return BatchState.CANCELLED  # never admitted: nothing was sent
        state_now = await (await self._host_for(batch_id)).cancel.remote(batch_id)
        return BatchState(state_now) if state_now else (await self.reads.state_of(batch_id))[0]

    async def cancel_explained(self, batch_id: str) -> tuple[BatchState, str]:
        """Cancel, and say what it did (the command line and the HTTP API say the same)."""
        before, _ = await self.reads.state_of(batch_id)
        state = await self.cancel(batch_id)
        if before is BatchState.QUEUED and state is BatchState.CANCELLED:
            return state, f"batch {batch_id}: cancelled while queued; nothing was sent"
        if state in TERMINAL_STATES and before in TERMINAL_STATES:
            return state, f"batch {batch_id}: already {state.value}; nothing to cancel"
        return state, f"batch {batch_id}: cancel requested; in-flight results will land, then CANCELLED"

    async def _host_for(self, batch_id: str) -> ray.actor.ActorHandle:
        """The coordinator host of the batch (the deployment's host count is admission's to say)."""
        if self._hosts is None:
            self._hosts = int(await self._admission().hosts.remote())
        return ray.get_actor(names.coordinator_host(names.host_index(batch_id, self._hosts)),
                             namespace=self.settings.ray_namespace)

    async def inspect(self, batch_id: str) -> dict[str, Any]:
        report = await self.reads.inspect(batch_id)
        try:
            host = await self._host_for(batch_id)
            report["coordinator"] = await asyncio.wait_for(host.snapshot.remote(batch_id), 5)
        except (ValueError, CJError, ray.exceptions.RayError, TimeoutError):
            report["coordinator"] = None
        return report

    async def admission_bound(self) -> str | None:
        """One line on what bounds the batches in progress, and why (None: no deployment to ask)."""
        try:
            if not ray.is_initialized():
                return None
            s: dict[str, Any] = await asyncio.wait_for(self._admission().stats.remote(), 10)
        except (CJError, ray.exceptions.RayError, TimeoutError):
            return None
        target = "no work bound" if s["backlog_target"] is None else f"backlog target {s['backlog_target']}"
        return (f"in progress {s['live']} of at most {s['max_live']} ({s['max_live_why']}); queued {s['queued']}; "
                f"comparisons waiting for the provider {s['backlog']}, {target} ({s['backlog_why']})")

    async def health(self, batch_id: str | None = None) -> list[dict[str, Any]]:
        """Rows of cj_batch_health; a QUEUED batch also gets its place in the admission queue (1: next)."""
        rows = await self.reads.health(batch_id)
        if batch_id is not None and not rows:
            raise BatchNotFound(f"batch {batch_id!r} not found", correlation_id=batch_id)
        if batch_id is not None and rows[0]["state"] != BatchState.QUEUED.value:
            rows[0]["queue_position"] = None
            waiting = await self.message_batches.waiting_for(batch_id)
            rows[0]["message_batches"] = [dataclasses.asdict(w) for w in waiting]
            return rows
        queued = rows if batch_id is None else await self.reads.health()
        places = {q.batch_id: i + 1 for i, q in enumerate(admission.order(
            [admission.Queued(r["batch_id"], r["total_budget"], r["essays"], r["age_s"])
             for r in queued if r["state"] == BatchState.QUEUED.value], self.settings.admission_aging_per_s))}
        for r in rows:
            r["queue_position"] = places.get(r["batch_id"])
        return rows
