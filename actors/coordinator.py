"""BatchCoordinator: one actor per batch (`cj-batch-<batch_id>`), the owner of its counters and state.

It starts from the database alone (in `__init__`, so a Ray restart or a re-creation by the Supervisor
resumes the batch), then walks the state machine in a single loop:

    INITIALIZING → GENERATING_PAIRS → WAITING_CALLBACKS → SCORING → (GENERATING_PAIRS …) → COMPLETED

Pair rows are committed (with `submitted`) before they are dispatched; each result is recorded at most
once with its counter in the same statement; when a round has no result outstanding the batch is scored
at once; finalization writes scores, projections and the one outbox event in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import zlib
from collections import Counter
from typing import Any

import ray
from ray.exceptions import RayError

from actors import metrics, names
from cjcore import pairing
from cjcore.completion import Policy, completion_pct, decide, failing, provider_out
from cjcore.contracts import (
    GRADE_SCALE,
    TERMINAL_STATES,
    BatchState,
    Comparison,
    ComparisonRequest,
    ComparisonResult,
    Counters,
    ErrorType,
    GradeProjectionOut,
    PlannedPair,
    Winner,
    denominator,
    new_correlation_id,
    usable_pairs,
)
from cjcore.grade_projection import Anchor, project
from cjcore.misfit import judge_fit, misfit_flags
from cjcore.retry import NOT_JUDGED, TRANSIENT, Attempt, backoff_s, plan_retries, should_retry
from cjcore.retrying import retrying
from cjcore.rulers import Ruler, held_scores
from cjcore.scores import BTFit, max_score_change, position_wins
from cjcore.settings import Settings
from storage.batch_writes import BatchWrites
from storage.database import make_engine
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


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class BatchCoordinator:
    async def __init__(self, batch_id: str, settings: Settings):  # type: ignore[misc]  # Ray awaits async constructors
        self.batch_id = batch_id
        self._log = logging.LoggerAdapter(log, {"batch_id": batch_id})  # a field on every JSON line
        self._settings = settings
        metrics.configure(settings.ray_namespace)
        self._last_result_at: float | None = None  # monotonic time of the last result recorded here
        assert settings.database_url, "the driver resolves the database URL before creating actors"
        # One connection kept per live batch (a second only while a result lands during a round's work):
        # a node's live batches are bounded by PostgreSQL's max_connections before memory.
        engine = make_engine(settings.database_url, pool_size=1, max_overflow=1)
        self._repo = BatchWrites(engine, settings.database_outage_s)
        self._reads = ReadModels(engine, settings.database_outage_s)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

        snap = await self._repo.load(batch_id)
        self._request = snap.request
        self._essays = {e.essay_id: e for e in snap.essays}
        self._state = snap.state
        self._counters = snap.counters
        self._threshold_pct = snap.threshold_pct
        # A ruler's anchors are held at their calibrated scores and never paired with each other (§4.6).
        self._ruler: Ruler | None = (
            await RulerStore(self._repo.engine, settings.database_outage_s).get(snap.anchor_set_id)
            if snap.anchor_set_id else None
        )
        self._held = held_scores([(e.essay_id, e.anchor_ref_id, e.text) for e in snap.essays if e.is_anchor],
                                  self._ruler)
        self._held_ids = frozenset(self._held)
        # Valid verdicts at the last scoring: a round counts as evidence only if it added enough of them.
        self._valid_at_fit = int(snap.metadata.get("completion", {}).get("valid_at_fit", 0))
        # Ending early (cancelled, or the provider out for CJ_PROVIDER_OUTAGE_S): (state, reason, error).
        # Nothing new is sent; what is at the provider lands, then the batch ends in that state.
        self._stopping: tuple[BatchState, str, str | None] | None = None
        if snap.metadata.get("cancel_requested"):
            self._stopping = (BatchState.CANCELLED, "cancelled", None)
        elif stop := snap.metadata.get("stopping"):
            self._stopping = (BatchState(stop["state"]), stop["reason"], stop.get("error"))
        # Monotonic time since which every result has been a transient failure (None: the provider works).
        self._failing_since: float | None = None
        self._rng = random.Random(batch_id)  # backoff jitter
        self._attempted: Counter[frozenset[str]] = pairing.attempt_counts(snap.attempted)
        self._last_scores = {e.essay_id: e.score for e in snap.essays if e.score is not None}
        self._last_ses = {e.essay_id: e.se for e in snap.essays if e.se is not None}
        self._workers = [
            ray.get_actor(names.provider(i), namespace=settings.ray_namespace) for i in range(settings.workers)
        ]
        self._scorer = ray.get_actor(
            names.scoring(zlib.crc32(batch_id.encode()) % settings.scorers), namespace=settings.ray_namespace
        )
        self._policy = Policy(
            threshold_pct=self._threshold_pct,
            stability_threshold=settings.score_stability_threshold,
            max_iterations=settings.max_iterations,
            min_success_rate=settings.min_success_rate,
            min_attempts_for_failure=settings.min_attempts_for_failure,
            target_reliability=self._request.target_reliability or settings.target_reliability,
            min_per_essay=settings.min_comparisons_per_essay,
        )
        self._in_flight: dict[str, Attempt] = {a.correlation_id: a for a in snap.pending}
        self._not_judged = snap.not_judged
        # The batch's valid verdicts, kept as they are recorded so a round's fit does not reload them all
        # (None: read from the database at the next scoring, when no result is outstanding).
        self._valid: list[Comparison] | None = None
        # Failed attempts of this round still to be retried (rebuilt from the rows after a restart), and when
        # each is due (its backoff; due at once after a restart).
        self._owed: list[Attempt] = [
            a for a, err in snap.unretried if should_retry(err, a.attempt, settings.max_attempts)
        ] if self._state is BatchState.WAITING_CALLBACKS else []
        self._due: dict[str, float] = {}
        if snap.pending and self._state not in TERMINAL_STATES:
            # Restarted mid-round: send again what has no result yet (workers ignore ids they hold;
            # a repeated provider call is recorded once).
            await self._dispatch(snap.pending)
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()
        self._log.info("batch %s: coordinator up in %s, %s", batch_id, self._state.value, self._counters)

    # -- messages -----------------------------------------------------------------------------------

    async def ping(self) -> str:
        return self._state.value

    async def nudge(self) -> str:
        """Supervisor: the batch looks idle; look at it again (a no-op if nothing is due)."""
        self._wake.set()
        return self._state.value

    async def snapshot(self) -> dict[str, Any]:
        c = self._counters
        return {"state": self._state.value, "submitted": c.submitted, "completed": c.completed,
                "failed": c.failed, "in_flight": c.in_flight, "iterations": c.iterations}

    async def record_results(self, results: list[ComparisonResult]) -> int:
        """Record results (first one per correlation id wins); returns how many were new here. The reply
        is the acknowledgement: it is sent only after the commit."""
        recorded, counters = await self._repo.record_results(self.batch_id, results)
        self._counters = _newer(self._counters, counters)
        now = time.monotonic()
        if recorded:
            self._last_result_at = now
        s = self._settings
        new = 0
        for r in results:
            if r.correlation_id not in recorded:
                self._log.info("batch %s: result for %s already recorded; ignored", self.batch_id, r.correlation_id)
                continue
            attempt = self._in_flight.pop(r.correlation_id, None)
            if attempt is None:  # handled at an earlier delivery, or a row this process did not dispatch
                if r.winner is not Winner.ERROR:
                    self._valid = None  # reread the verdicts at the next scoring
                continue
            new += 1
            if r.error_type in NOT_JUDGED:
                self._not_judged += 1
            if r.error_type in TRANSIENT:
                self._failing_since = self._failing_since or now
            elif r.error_type is not ErrorType.CANCELLED:
                self._failing_since = None  # the judge answered: the provider is working
            if r.winner in (Winner.ESSAY_A, Winner.ESSAY_B) and self._valid is not None:
                self._valid.append(Comparison(attempt.essay_a_id, attempt.essay_b_id, r.winner))
            if should_retry(r.error_type, attempt.attempt, s.max_attempts) and self._stopping is None:
                self._owed.append(attempt)
                if r.error_type in TRANSIENT:
                    self._due[attempt.correlation_id] = now + backoff_s(
                        attempt.attempt, s.retry_backoff_s, s.retry_backoff_max_s, 0.5 + self._rng.random() / 2)
        if self._owed or self._counters.in_flight == 0:
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
        self._owed.clear()
        await self._repo.merge_metadata(self.batch_id, {"cancel_requested": True} if target is BatchState.CANCELLED
                                        else {"stopping": {"state": target.value, "reason": reason, "error": error}})
        dropped: list[list[str] | BaseException] = await asyncio.gather(
            *(w.drop_batch.remote(self.batch_id) for w in self._workers), return_exceptions=True)
        cids = [cid for part in dropped if isinstance(part, list) for cid in part]
        if cids:
            await self.record_results(
                [ComparisonResult.error((cid, self.batch_id), ErrorType.CANCELLED, f"batch ending: {reason}")
                 for cid in cids]
            )
        self._wake.set()

    # -- the state machine ------------------------------------------------------------------------

    async def _run(self) -> None:
        if self._state is BatchState.QUEUED:  # not admitted: admission creates the coordinator when it is
            self._log.warning("batch %s: still QUEUED; coordinator exits", self.batch_id)
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
            return
        # Also look every tick without a message: retries falling due, the provider-outage clock.
        tick_s = max(0.5, min(30.0, self._settings.provider_outage_s / 4))
        try:
            while self._state not in TERMINAL_STATES:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), tick_s)
                self._wake.clear()
                async with self._lock:
                    await self._step()
        except Exception:
            self._log.exception("batch %s: coordinator loop failed; exiting so Ray restarts it", self.batch_id)
            ray.kill(ray.get_runtime_context().current_actor, no_restart=False)
            return
        self._log.info("batch %s: %s; coordinator exits", self.batch_id, self._state.value)
        with contextlib.suppress(ValueError, RayError):  # room for the next queued batch, now
            ray.get_actor(names.ADMISSION, namespace=self._settings.ray_namespace).wake.remote()
        await metrics.flush()
        # A finished coordinator holds ~50 MB for nothing: leave (no restart for a clean exit).
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    async def _move(self, target: BatchState, meta: dict[str, Any] | None = None) -> None:
        if not await self._repo.transition(self.batch_id, target, meta):
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
        if self._stopping is None and provider_out(self._failing_since, time.monotonic(), outage_s):
            await self._stop(BatchState.FAILED, "provider_outage",
                             f"the provider answered only with transient failures (429, 529, 5xx, timeouts, lost "
                             f"connections) for {outage_s:g}s (CJ_PROVIDER_OUTAGE_S)")
        if self._stopping is not None:
            if self._counters.in_flight == 0:
                target, reason, error = self._stopping
                self._finalized(target, await self._repo.finalize(
                    self.batch_id, target, reason, meta={"error": error} if error else None))
                await self._reload_state()
        elif state is BatchState.INITIALIZING:
            await self._move(BatchState.GENERATING_PAIRS)
        elif state is BatchState.GENERATING_PAIRS:
            await self._start_round()
        elif state is BatchState.WAITING_CALLBACKS:
            if self._owed:
                await self._retry()
            elif self._counters.in_flight == 0:
                await self._move(BatchState.SCORING)
        elif state is BatchState.SCORING:
            await self._score()

    async def _start_round(self) -> None:
        c = self._counters
        n = len(self._essays)
        iteration = c.iterations + 1
        unused = usable_pairs(n, len(self._held)) - len(self._attempted)
        size = pairing.round_size(n, self._settings.pairs_per_essay_per_round, c.total_budget - c.submitted, unused)
        rng = pairing.round_rng(self._request.pair_generation_seed, self.batch_id, iteration)
        ids = list(self._essays)
        planned = (
            pairing.first_round(ids, size, rng, self._held_ids)
            if not self._attempted
            else pairing.next_round(ids, self._attempted, self._last_scores, self._last_ses, size, rng, self._held_ids)
        )
        rows = [Attempt(new_correlation_id(), p.essay_a_id, p.essay_b_id, 1) for p in planned]
        counters = await self._repo.insert_round(
            self.batch_id, iteration, [(r.correlation_id, r.essay_a_id, r.essay_b_id) for r in rows]
        )
        if counters is None:
            # The batch left GENERATING_PAIRS under us (another incarnation committed a round): rows exist that
            # this process never dispatched. Restart and rebuild from the database.
            raise RuntimeError(f"batch {self.batch_id}: round {iteration} already committed; rehydrating")
        self._counters = _newer(self._counters, counters)
        self._state = BatchState.WAITING_CALLBACKS
        self._track(rows)
        self._log.info("batch %s: round %d, %d pairs committed (budget %d, submitted %d; %s)", self.batch_id, iteration,
                       len(rows), c.total_budget, counters.submitted, self._completion_note())
        await self._dispatch(rows)
        self._wake.set()

    def _completion_note(self) -> str:
        """The completion rule in force, for every log line about progress."""
        n, k = len(self._essays), len(self._held)
        return (f"{completion_pct(self._counters, n, k):.1f}% of denominator "
                f"{denominator(self._counters.total_budget, n, k)}, threshold {self._threshold_pct:g}%")

    def _track(self, rows: list[Attempt]) -> None:
        for r in rows:
            self._attempted[pairing.pair_key(r.essay_a_id, r.essay_b_id)] += 1
            self._in_flight[r.correlation_id] = r

    async def _retry(self) -> None:
        """Failed attempts of this round whose backoff is over become new attempts (new rows, new
        correlation ids); the rest wait for their time."""
        now = time.monotonic()
        owed = [a for a in self._owed if self._due.get(a.correlation_id, 0.0) <= now]
        self._owed = [a for a in self._owed if self._due.get(a.correlation_id, 0.0) > now]
        for a in owed:
            self._due.pop(a.correlation_id, None)
        if self._owed:
            wait = min(self._due[a.correlation_id] for a in self._owed) - now
            asyncio.get_running_loop().call_later(wait, self._wake.set)
        if not owed:
            return
        self._wake.set()
        c = self._counters
        if failing(c, self._policy, self._not_judged):
            self._log.info("batch %s: %d failed attempts not retried: %d valid of %d attempts is below %.0f%%",
                           self.batch_id, len(owed), c.completed, c.completed + c.failed,
                           100 * self._policy.min_success_rate)
            return
        planned = [(new_correlation_id(), r) for r in plan_retries(owed, c.total_budget - c.submitted,
                                                                    self._fresh_pairs)]
        if not planned:
            return
        out = await self._repo.insert_retries(self.batch_id, planned)
        if out is None:
            await self._reload_state()
            return
        inserted, counters = out
        self._counters = _newer(self._counters, counters)
        rows = [Attempt(cid, r.essay_a_id, r.essay_b_id, r.attempt) for cid, r in planned if cid in inserted]
        self._track(rows)
        self._log.info("batch %s: round %d, %d failed attempts retried (submitted %d of budget %d; %s)",
                       self.batch_id, counters.iterations, len(rows), counters.submitted, counters.total_budget,
                       self._completion_note())
        await self._dispatch(rows)

    def _fresh_pairs(self, k: int) -> list[PlannedPair]:
        rng = random.Random(f"{self.batch_id}:{self._counters.submitted}")
        return pairing.next_round(list(self._essays), self._attempted, self._last_scores, self._last_ses, k, rng,
                                  self._held_ids)

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
        k = len(self._workers)
        offset = zlib.crc32(self.batch_id.encode()) % k

        async def send(i: int, part: list[ComparisonRequest]) -> None:
            # A worker that is dead or restarting: hand its share to the next one, and go round the pool
            # with backoff while all are away. If none takes it in CJ_RESULT_DELIVERY_TIMEOUT_S, the rows
            # stay without a result and the Supervisor's expiry retries them (invariant 7).
            async def round_the_pool() -> None:
                for step in range(k):
                    worker = self._workers[(i + offset + step) % k]
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

        await asyncio.gather(*(send(i, requests[i::k]) for i in range(k) if requests[i::k]))

    async def _score(self) -> None:
        if self._valid is None:  # no result is outstanding now, so none can land during the read
            self._valid = await self._repo.valid_comparisons(self.batch_id)
        comparisons = self._valid
        ids = list(self._essays)
        alpha = self._settings.bt_regularization
        fit: BTFit = await self._scorer.fit.remote(ids, comparisons, alpha, self._held)
        change = max_score_change(self._last_scores, fit.score_of())
        n, c = len(ids), self._counters
        new_valid = c.completed - self._valid_at_fit
        decision = decide(c, n, change, self._policy, self._not_judged, new_valid=new_valid,
                          reliability=fit.ssr, held=len(self._held))
        a_wins, b_wins = position_wins(comparisons)
        meta: dict[str, Any] = {
            "reliability": {"ssr": round(fit.ssr, 4), "comparisons_per_essay": round(2 * fit.n_comparisons / n, 2),
                            "target": self._policy.target_reliability},
            "position": {"a_wins": a_wins, "b_wins": b_wins, "bias_logit": round(fit.position_bias, 4),
                         "bias_se": round(fit.position_bias_se, 4)},
            "completion": {"denominator": denominator(c.total_budget, n, len(self._held)),
                           "threshold_pct": self._threshold_pct,
                           "completion_pct": round(completion_pct(c, n, len(self._held)), 2),
                           "stability_threshold": self._policy.stability_threshold,
                           "last_max_change": None if change is None else round(change, 4),
                           "new_valid": new_valid, "valid_at_fit": c.completed},
            "held": sorted(self._held),
        }
        self._log.info(
            "batch %s: round %d scored: reliability %.3f (target %g), %d new valid verdicts, position bias %.3f ± "
            "%.3f, max change %s (stable below %g), %s; %s",
            self.batch_id, c.iterations, fit.ssr, self._policy.target_reliability, new_valid, fit.position_bias,
            fit.position_bias_se, meta["completion"]["last_max_change"], self._policy.stability_threshold,
            decision.reason or "next round", self._completion_note(),
        )
        scores = {e: (s, se) for e, s, se in zip(fit.essay_ids, fit.scores, fit.se, strict=True)}
        if not decision.finalize:
            if await self._repo.save_round(self.batch_id, scores, meta):
                self._last_scores, self._last_ses = fit.score_of(), fit.se_of()
                self._valid_at_fit = c.completed
                self._state = BatchState.GENERATING_PAIRS
                self._wake.set()
            else:
                await self._reload_state()
            return
        target = BatchState.FAILED if decision.failed else BatchState.COMPLETED
        if decision.failed:
            judged = c.completed + c.failed - self._not_judged
            meta["error"] = (f"valid results {c.completed} of {judged} judged attempts, below "
                             f"CJ_MIN_SUCCESS_RATE {self._policy.min_success_rate:g}")
        projections: list[GradeProjectionOut] = []
        fit_stats: dict[str, EssayFit] = {}
        if target is BatchState.COMPLETED:
            meta["reliability"]["split_half"] = await self._scorer.split_half.remote(
                ids, comparisons, alpha, self._held, zlib.crc32(self.batch_id.encode()))
            flags = misfit_flags(fit.infit)
            fit_stats = {e: EssayFit(i, o, f) for e, i, o, f in zip(ids, fit.infit, fit.outfit, flags, strict=True)}
            meta["judges"] = [judge_fit(self._request.llm.model, fit)]
            projections = self._project(scores)
        ranking = sorted(ids, key=lambda e: (-scores[e][0], e))
        age = await self._repo.finalize(
            self.batch_id, target, decision.reason or "", scores=scores,
            ranks={e: i + 1 for i, e in enumerate(ranking)}, grade_projections=projections, meta=meta,
            fit_stats=fit_stats,
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
        metrics.observe("cj_batch_duration_seconds", age, state=target.value)
        if self._last_result_at is not None:
            metrics.observe("cj_finalize_lag_seconds", time.monotonic() - self._last_result_at)
