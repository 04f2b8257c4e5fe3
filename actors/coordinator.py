"""BatchCoordinator: the owner of one batch's counters and state, an actor in the actor model's sense.

It is not a Ray actor: a Ray actor is a process (~100 MB, ~2.5 s of CPU to start), and a batch in progress
must cost bytes. Coordinator hosts (`actors/coordinator_host.py`, `cj-coordinators-<i>`) hold many of them in
one process and route each batch's messages to its coordinator, which handles them one at a time.

An activation claims the batch in PostgreSQL (a new fencing epoch; every write below carries it, so an
activation that lost the batch can no longer write it), starts from the database alone, then walks the
state machine in a single loop:

    INITIALIZING → GENERATING_PAIRS → WAITING_CALLBACKS → SCORING → (GENERATING_PAIRS …) → COMPLETED

Pair rows are committed (with `submitted`) before they are dispatched; each result is recorded at most
once with its counter in the same statement; when a round has no result outstanding (or, in Messages mode,
no more than its tail: `CJ_ROUND_TAIL_PCT`) the batch is scored at once; it finalizes only with no result
outstanding; finalization writes scores, projections and the one outbox event in one transaction. The round
bookkeeping is `cjcore.batch_book.BatchBook`; this class persists and routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayError

from actors import metrics
from cjcore import pairing
from cjcore.batch_book import BatchBook, Outcome, RetryPolicy
from cjcore.batch_metadata import BatchMetadata, Stopping
from cjcore.completion import Policy, completion_pct, round_cap
from cjcore.contracts import (
    GRADE_SCALE,
    TERMINAL_STATES,
    BatchState,
    ComparisonRequest,
    ComparisonResult,
    Counters,
    ErrorType,
    GradeProjectionOut,
    correlation_id_for,
    denominator,
)
from cjcore.grade_projection import Anchor, project
from cjcore.misfit import judge_fit, misfit_flags
from cjcore.retry import Attempt, should_retry
from cjcore.retrying import retrying
from cjcore.rulers import Ruler, held_scores
from cjcore.scores import BTFit
from cjcore.settings import Settings
from storage.batch_writes import BatchWrites
from storage.read_models import ReadModels
from storage.records import EssayFit
from storage.rulers import RulerStore

log = logging.getLogger(__name__)


class _PoolAway(Exception):
    """No provider worker took a share of a round (each dead or restarting): retried with backoff."""


def _newer(a: Counters, b: Counters) -> Counters:
    """Counters only grow; keep the larger of each so a late reply never moves them backwards."""
    return Counters(
        total_budget=a.total_budget,
        submitted=max(a.submitted, b.submitted),
        completed=max(a.completed, b.completed),
        failed=max(a.failed, b.failed),
        iterations=max(a.iterations, b.iterations),
    )


@dataclass
class HostContext:
    """What every coordinator of a host shares: one database pool, the pools' handles, the host's name."""

    host: str
    settings: Settings
    writes: BatchWrites
    reads: ReadModels
    rulers: RulerStore
    workers: list[ray.actor.ActorHandle]
    scorers: list[ray.actor.ActorHandle]
    wake_admission: Any  # () -> None


class BatchCoordinator:
    def __init__(self, ctx: HostContext, batch_id: str, epoch: int):
        self.batch_id = batch_id
        self.epoch = epoch
        self._ctx = ctx
        self._settings = ctx.settings
        self._repo = ctx.writes
        self._reads = ctx.reads
        self._log = logging.LoggerAdapter(log, {"batch_id": batch_id})  # a field on every JSON line
        self._last_result_at: float | None = None  # monotonic time of the last result recorded here
        self.touched_at = time.monotonic()  # the last message or step (for passivation)
        self._busy = 0  # messages being handled now
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._final_wait = False  # SCORING decided to finalize while the round's tail was out: wait for it

    @classmethod
    async def activate(cls, ctx: HostContext, batch_id: str, recovering: bool) -> BatchCoordinator | None:
        """Claim the batch and rebuild it from the database; None if it is not admitted or already terminal.
        `recovering`: this host may not have sent its rows without a result (a restart, a batch new to the
        host), so they are sent again (workers ignore ids they hold; a repeated provider call is recorded
        once). A batch woken from passivation on the same host sends nothing again."""
        claim = await ctx.writes.claim(batch_id, ctx.host)
        if claim is None:
            return None
        self = cls(ctx, batch_id, claim[0])
        await self._load(recovering)
        return self

    async def _load(self, recovering: bool) -> None:
        settings = self._settings
        snap = await self._repo.load(self.batch_id)
        self._request = snap.request
        self._essays = {e.essay_id: e for e in snap.essays}
        self._state = snap.state
        self._counters = snap.counters
        self._threshold_pct = snap.threshold_pct
        # A ruler's anchors are held at their calibrated scores and never paired with each other (§4.6).
        self._ruler: Ruler | None = await self._ctx.rulers.get(snap.anchor_set_id) if snap.anchor_set_id else None
        self._held = held_scores([(e.essay_id, e.anchor_ref_id, e.text) for e in snap.essays if e.is_anchor],
                                  self._ruler)
        # Ending early (cancelled, or the provider out for CJ_PROVIDER_OUTAGE_S): (state, reason, error).
        # Nothing new is sent; what is at the provider lands, then the batch ends in that state.
        self._stopping: tuple[BatchState, str, str | None] | None = None
        if snap.metadata.cancel_requested:
            self._stopping = (BatchState.CANCELLED, "cancelled", None)
        elif stop := snap.metadata.stopping:
            self._stopping = (BatchState(stop.state), stop.reason, stop.error)
        policy = Policy(
            threshold_pct=self._threshold_pct,
            stability_threshold=settings.score_stability_threshold,
            max_iterations=round_cap(settings.max_iterations, snap.counters.total_budget, len(self._essays),
                                     settings.round_pairs_per_essay),
            min_success_rate=settings.min_success_rate,
            min_attempts_for_failure=settings.min_attempts_for_failure,
            # Resolved at submit; a row stored before that was recorded resolves it as submit does now.
            target_reliability=snap.metadata.target_reliability or self._request.target_reliability
            or settings.target_reliability,
            min_per_essay=settings.min_comparisons_per_essay,
        )
        self._book = BatchBook(
            batch_id=self.batch_id, essay_ids=list(self._essays), policy=policy,
            retry=RetryPolicy(settings.max_attempts, settings.retry_backoff_s, settings.retry_backoff_max_s),
            held=frozenset(self._held), seed=self._request.pair_generation_seed,
            pairs_per_essay=settings.round_pairs_per_essay, tail_pct=settings.round_tail, not_judged=snap.not_judged,
            # Valid verdicts at the last scoring: a round counts as evidence only if it added enough of them.
            valid_at_fit=snap.metadata.completion.valid_at_fit if snap.metadata.completion else 0,
            in_flight={a.correlation_id: a for a in snap.pending},
            attempted=pairing.attempt_counts(snap.attempted),
            # Failed attempts of this round still to retry (due at once after an activation).
            owed=[a for a, err in snap.unretried if should_retry(err, a.attempt, settings.max_attempts)]
            if self._state is BatchState.WAITING_CALLBACKS and self._stopping is None else [],
            # Read from the database at the next scoring, when no result is outstanding; none yet with no rows.
            valid=[] if not snap.attempted else None,
            last_scores={e.essay_id: e.score for e in snap.essays if e.score is not None},
            last_ses={e.essay_id: e.se for e in snap.essays if e.se is not None},
        )
        self._scorer = self._ctx.scorers[zlib.crc32(self.batch_id.encode()) % len(self._ctx.scorers)]
        if recovering and snap.pending and self._state not in TERMINAL_STATES and self._stopping is None:
            await self._dispatch(snap.pending)
        self._log.info("batch %s: coordinator up on %s (epoch %d) in %s, %s", self.batch_id, self._ctx.host,
                       self.epoch, self._state.value, self._counters)

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()
        return self._task

    def stop(self) -> None:
        """Passivated or replaced: its loop ends here (nothing in memory is needed again: the database has it)."""
        if self._task is not None:
            self._task.cancel()

    @property
    def state(self) -> BatchState:
        return self._state

    def idle_s(self, now: float) -> float | None:
        """Seconds this batch has had nothing to do but wait for results at the provider; None when it has
        something to do (or is ending, or its provider is failing: the outage clock lives only here)."""
        if (self._busy or self._lock.locked() or self._wake.is_set() or self._stopping is not None
                or self._state is not BatchState.WAITING_CALLBACKS or not self._book.passivatable()):
            return None
        return now - self.touched_at

    # -- messages (the host calls these; each handled with the batch's others, one at a time) ---------------

    def snapshot(self) -> dict[str, Any]:
        c = self._counters
        return {"state": self._state.value, "submitted": c.submitted, "completed": c.completed,
                "failed": c.failed, "in_flight": c.in_flight, "iterations": c.iterations,
                "host": self._ctx.host, "epoch": self.epoch}

    def nudge(self) -> str:
        """Supervisor: the batch looks idle; look at it again (a no-op if nothing is due)."""
        self._wake.set()
        return self._state.value

    async def record_results(self, results: list[ComparisonResult]) -> int:
        """Record results (first one per correlation id wins); returns how many were new here. The reply
        is the acknowledgement: it is sent only after the commit."""
        self._busy += 1
        try:
            recorded, counters = await self._repo.record_results(self.batch_id, results, epoch=self.epoch)
        finally:
            self._busy -= 1
            self.touched_at = time.monotonic()
        self._counters = _newer(self._counters, counters)
        now = time.monotonic()
        if recorded:
            self._last_result_at = now
        for r in results:
            if r.correlation_id not in recorded:
                self._log.info("batch %s: result for %s already recorded; ignored", self.batch_id, r.correlation_id)
        new = self._book.record((Outcome(r.correlation_id, r.winner, r.error_type, r.retry_after_s) for r in results
                                 if r.correlation_id in recorded), now, retry=self._stopping is None)
        if self._book.owed or self._round_in():
            self._wake.set()
        return new

    async def expire(self, correlation_ids: list[str], limit_s: float) -> int:
        """Supervisor: these pairs waited longer than `limit_s` (CJ_MAX_PROCESSING_SECONDS)."""
        return await self.record_results(
            [ComparisonResult.error((cid, self.batch_id), ErrorType.QUEUE_TIMEOUT, f"no result within {limit_s:g}s")
             for cid in correlation_ids]
        )

    async def cancel(self) -> str:
        """Stop dispatching; requests still queued at workers become CANCELLED error results, calls
        already at the provider land and are counted; then the batch ends CANCELLED with one event."""
        async with self._lock:
            if self._state not in TERMINAL_STATES:
                await self._stop(BatchState.CANCELLED, "cancelled", None)
            return self._state.value

    async def _stop(self, target: BatchState, reason: str, error: str | None) -> None:
        """End early: nothing new is sent, what is queued at the workers becomes CANCELLED error results,
        and once what is at the provider has landed the batch ends in `target` (`_step`)."""
        if self._stopping is not None:
            return
        self._stopping = (target, reason, error)
        self._book.drop_owed()
        await self._repo.merge_metadata(
            self.batch_id, BatchMetadata(cancel_requested=True) if target is BatchState.CANCELLED
            else BatchMetadata(stopping=Stopping(state=target.value, reason=reason, error=error)), epoch=self.epoch)
        dropped: list[list[str] | BaseException] = await asyncio.gather(
            *(w.drop_batch.remote(self.batch_id) for w in self._ctx.workers), return_exceptions=True)
        cids = [cid for part in dropped if isinstance(part, list) for cid in part]
        if cids:
            await self.record_results(
                [ComparisonResult.error((cid, self.batch_id), ErrorType.CANCELLED, f"batch ending: {reason}")
                 for cid in cids]
            )
        self._wake.set()

    # -- the state machine ------------------------------------------------------------------------

    async def _run(self) -> None:
        """Until terminal. Also looks every tick without a message: retries falling due, the outage clock.
        An exception ends the loop and is the host's to handle (re-activation with backoff, then FAILED)."""
        tick_s = max(0.5, min(30.0, self._settings.provider_outage_s / 4))
        while self._state not in TERMINAL_STATES:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), tick_s)
            self._wake.clear()
            async with self._lock:
                await self._step()
                self.touched_at = time.monotonic()
        self._log.info("batch %s: %s; coordinator leaves %s", self.batch_id, self._state.value, self._ctx.host)

    async def _move(self, target: BatchState, meta: BatchMetadata | None = None) -> None:
        if not await self._repo.transition(self.batch_id, target, meta, epoch=self.epoch):
            await self._reload_state()
            return
        self._state = target
        self._wake.set()

    async def _reload_state(self) -> None:
        self._state, counters = await self._reads.state_of(self.batch_id)
        self._counters = _newer(self._counters, counters)
        self._wake.set()

    async def _step(self) -> None:
        state = self._state
        outage_s = self._settings.provider_outage_s
        if self._stopping is None and self._book.provider_out(time.monotonic(), outage_s):
            await self._stop(BatchState.FAILED, "provider_outage",
                             f"the provider answered only with transient failures (429, 529, 5xx, timeouts, lost "
                             f"connections) for {outage_s:g}s (CJ_PROVIDER_OUTAGE_S)")
        if self._stopping is not None:
            if self._counters.in_flight == 0:
                target, reason, error = self._stopping
                meta = BatchMetadata(error=error) if error else None
                self._finalized(target, await self._repo.finalize(self.batch_id, target, reason, meta=meta,
                                                                  epoch=self.epoch))
                await self._reload_state()
        elif state is BatchState.INITIALIZING:
            await self._move(BatchState.GENERATING_PAIRS)
        elif state is BatchState.GENERATING_PAIRS:
            await self._start_round()
        elif state is BatchState.WAITING_CALLBACKS:
            if self._book.owed:
                await self._retry()
            elif self._round_in():
                await self._move(BatchState.SCORING)
        elif state is BatchState.SCORING and self._scorable():
            self._final_wait = False
            await self._score()

    def _round_in(self) -> bool:
        """Nothing out by the database's counters, or the book lets the round go with its tail out."""
        return self._counters.in_flight == 0 or self._book.round_in()

    def _scorable(self) -> bool:
        """The verdicts are read back only with nothing out, and a batch finalizes only with nothing out."""
        return self._counters.in_flight == 0 or not (self._final_wait or self._book.valid is None)

    async def _start_round(self) -> None:
        c = self._counters
        iteration = c.iterations + 1
        rows = [Attempt(correlation_id_for(self.batch_id, f"r{iteration}/{i}/{p.essay_a_id}/{p.essay_b_id}"),
                        p.essay_a_id, p.essay_b_id, 1) for i, p in enumerate(self._book.plan_round(c))]
        counters = await self._repo.insert_round(
            self.batch_id, iteration, [(r.correlation_id, r.essay_a_id, r.essay_b_id) for r in rows], epoch=self.epoch
        )
        if counters is None:
            # The batch left GENERATING_PAIRS under us (another activation committed a round): rows exist that
            # this one never dispatched. The host re-activates the batch from the database.
            raise RuntimeError(f"batch {self.batch_id}: round {iteration} already committed; rehydrating")
        self._counters = _newer(self._counters, counters)
        self._state = BatchState.WAITING_CALLBACKS
        self._book.sent(rows, new_round=True)
        self._log.info("batch %s: round %d, %d pairs committed (budget %d, submitted %d; %s)", self.batch_id, iteration,
                       len(rows), c.total_budget, counters.submitted, self._completion_note())
        await self._dispatch(rows)
        self._wake.set()

    def _completion_note(self) -> str:
        """The completion rule in force, for every log line about progress."""
        n, k = len(self._essays), len(self._held)
        return (f"{completion_pct(self._counters, n, k):.1f}% of denominator "
                f"{denominator(self._counters.total_budget, n, k)}, threshold {self._threshold_pct:g}%")

    async def _retry(self) -> None:
        """Failed attempts of this round whose backoff is over become new attempts (new rows, new
        correlation ids); the rest wait for their time."""
        owed, wait = self._book.take_due(time.monotonic())
        if wait is not None:
            asyncio.get_running_loop().call_later(wait, self._wake.set)
        if not owed:
            return
        self._wake.set()
        c = self._counters
        planned = [(correlation_id_for(self.batch_id, f"retry-of/{r.retry_of}"), r)
                   for r in self._book.retries(owed, c)]
        if not planned:
            self._log.info("batch %s: %d failed attempts not retried (budget spent, or %d valid of %d attempts "
                           "is below %.0f%%)", self.batch_id, len(owed), c.completed, c.completed + c.failed,
                           100 * self._book.policy.min_success_rate)
            return
        out = await self._repo.insert_retries(self.batch_id, planned, epoch=self.epoch)
        if out is None:
            await self._reload_state()
            return
        inserted, counters = out
        self._counters = _newer(self._counters, counters)
        rows = [Attempt(cid, r.essay_a_id, r.essay_b_id, r.attempt) for cid, r in planned if cid in inserted]
        self._book.sent(rows)
        self._log.info("batch %s: round %d, %d failed attempts retried (submitted %d of budget %d; %s)",
                       self.batch_id, counters.iterations, len(rows), counters.submitted, counters.total_budget,
                       self._completion_note())
        await self._dispatch(rows)

    async def _dispatch(self, rows: list[Attempt]) -> None:
        llm = self._request.llm
        requests = [
            ComparisonRequest(
                correlation_id=r.correlation_id, batch_id=self.batch_id, essay_a_id=r.essay_a_id,
                essay_b_id=r.essay_b_id, text_a=self._essays[r.essay_a_id].text,
                text_b=self._essays[r.essay_b_id].text, instructions=self._request.instructions,
                model=llm.model, temperature=llm.temperature, max_tokens=llm.max_tokens,
            )
            for r in rows
        ]
        workers = self._ctx.workers
        k = len(workers)
        # Each request goes to the worker its correlation id names: a re-send after an activation reaches the
        # worker that holds it (and ignores it) rather than one that would buy it a second time.
        parts: dict[int, list[ComparisonRequest]] = {}
        for req in requests:
            parts.setdefault(zlib.crc32(req.correlation_id.encode()) % k, []).append(req)

        async def send(i: int, part: list[ComparisonRequest]) -> None:
            # A worker that is dead or restarting: hand its share to the next one, and go round the pool
            # with backoff while all are away. If none takes it in CJ_RESULT_DELIVERY_TIMEOUT_S, the rows
            # stay without a result and the Supervisor's expiry retries them (invariant 7).
            async def round_the_pool() -> None:
                for step in range(k):
                    worker = workers[(i + step) % k]
                    try:
                        await worker.enqueue.remote(part)
                        return
                    except RayError as exc:
                        self._log.warning("batch %s: worker unavailable for %d requests (%s); trying the next",
                                          self.batch_id, len(part), type(exc).__name__)
                raise _PoolAway

            try:
                async for attempt in retrying(lambda exc: isinstance(exc, _PoolAway),
                                              within_s=self._settings.result_delivery_timeout_s):
                    with attempt:
                        await round_the_pool()
            except _PoolAway:
                self._log.error("batch %s: no worker took %d requests; the Supervisor will expire and retry them",
                                self.batch_id, len(part))

        await asyncio.gather(*(send(i, part) for i, part in parts.items()))

    async def _score(self) -> None:
        if self._book.valid is None:  # no result is outstanding now, so none can land during the read
            self._book.valid = await self._repo.valid_comparisons(self.batch_id)
        # What the fit sees, taken together: results of the round's tail may land while it runs.
        comparisons, c = list(self._book.valid), self._counters
        ids = list(self._essays)
        alpha = self._settings.bt_regularization
        fit: BTFit = await self._scorer.fit.remote(ids, comparisons, alpha, self._held)
        scored = self._book.judge(fit, c, comparisons, self._threshold_pct)
        decision, meta = scored.decision, scored.meta
        if decision.finalize and self._counters.in_flight:
            self._final_wait = True  # scored again once the tail has landed, with every result
            self._log.info("batch %s: round %d would end the batch (%s); waiting for its last %d results",
                           self.batch_id, c.iterations, decision.reason, self._counters.in_flight)
            return
        self._log.info(
            "batch %s: round %d scored: reliability %.3f (target %g), %d new valid verdicts, position bias %.3f ± "
            "%.3f, max change %s (stable below %g), %s; %s",
            self.batch_id, c.iterations, fit.ssr, self._book.policy.target_reliability, scored.new_valid,
            fit.position_bias, fit.position_bias_se, scored.change,
            self._book.policy.stability_threshold, decision.reason or "next round", self._completion_note(),
        )
        scores = {e: (s, se) for e, s, se in zip(fit.essay_ids, fit.scores, fit.se, strict=True)}
        if not decision.finalize:
            # Taken as this round's fit whatever the reply: a save repeated after a lost commit reply answers
            # False, and the batch has moved on all the same (the reload below says where to).
            self._book.fitted(fit, c)
            if await self._repo.save_round(self.batch_id, scores, meta, epoch=self.epoch):
                self._state = BatchState.GENERATING_PAIRS
                self._wake.set()
            else:
                await self._reload_state()
            return
        target = BatchState.FAILED if decision.failed else BatchState.COMPLETED
        projections: list[GradeProjectionOut] = []
        fit_stats: dict[str, EssayFit] = {}
        n = len(ids)
        if target is BatchState.COMPLETED:
            assert meta.reliability is not None
            meta.reliability.split_half = await self._scorer.split_half.remote(
                ids, comparisons, alpha, self._held, zlib.crc32(self.batch_id.encode()))
            flags = misfit_flags(fit.infit)
            fit_stats = {e: EssayFit(i, o, f) for e, i, o, f in zip(ids, fit.infit, fit.outfit, flags, strict=True)}
            meta.judges = [judge_fit(self._request.llm.model, fit)]
            projections = self._project(scores)
        ranking = sorted(ids, key=lambda e: (-scores[e][0], e))
        age = await self._repo.finalize(
            self.batch_id, target, decision.reason or "", scores=scores,
            ranks={e: i + 1 for i, e in enumerate(ranking)}, grade_projections=projections, meta=meta,
            fit_stats=fit_stats, epoch=self.epoch,
        )
        self._finalized(target, age)
        if age is not None and target is BatchState.COMPLETED:
            metrics.observe("cj_batch_ssr", fit.ssr)
            metrics.observe("cj_position_bias", fit.position_bias)
            metrics.observe("cj_comparisons_per_essay", 2 * fit.n_comparisons / n)
        await self._reload_state()

    def _project(self, scores: dict[str, tuple[float, float]]) -> list[GradeProjectionOut]:
        """Grades of the students: from the ruler's boundaries when the batch has one, else from its anchors."""
        anchors = [Anchor(e, self._essays[e].known_grade or "", *scores[e])
                   for e in self._essays if self._essays[e].is_anchor and (not self._ruler or e in self._held)]
        students = {e: scores[e] for e in self._essays if not self._essays[e].is_anchor}
        bounds = (self._ruler.grades, self._ruler.cuts) if self._ruler else None
        return [
            GradeProjectionOut(essay_id=p.essay_id, grade=p.grade, probabilities=p.probabilities,
                               confidence=p.confidence)
            for p in project(students, anchors, GRADE_SCALE, bounds)
        ]

    def _finalized(self, target: BatchState, age: float | None) -> None:
        if age is None:
            self._log.info("batch %s: already finalized elsewhere; nothing written", self.batch_id)
            return
        self._ctx.wake_admission()  # room for the next queued batch, now
        metrics.observe("cj_batch_duration_seconds", age, state=target.value)
        if self._last_result_at is not None:
            metrics.observe("cj_finalize_lag_seconds", time.monotonic() - self._last_result_at)
