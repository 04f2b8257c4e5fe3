"""What the storage modules share: the rows they hand out (dataclasses, no SQL types), the counter columns
and the base of every store (an engine, and how long a call rides out a PostgreSQL outage)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from cjcore.batch_metadata import BatchMetadata
from cjcore.contracts import BatchRequest, BatchState, BudgetSource, Counters, ErrorType, Essay
from cjcore.retry import Attempt
from storage.outage import rides_out_outages
from storage.schema import batch_states


class Store:
    """A store speaks SQL for one concern. Every public coroutine a subclass defines is retried while
    PostgreSQL is away, for up to `outage_s` (storage/outage.py): a store cannot forget to."""

    def __init__(self, engine: AsyncEngine, outage_s: float = 60.0):
        self.engine = engine
        self.outage_s = outage_s

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        rides_out_outages(cls)


COUNTER_COLS = (
    batch_states.c.total_budget,
    batch_states.c.submitted_comparisons,
    batch_states.c.completed_comparisons,
    batch_states.c.failed_comparisons,
    batch_states.c.current_iteration,
)


def counters_of(row: Any) -> Counters:
    return Counters(
        total_budget=row.total_budget,
        submitted=row.submitted_comparisons,
        completed=row.completed_comparisons,
        failed=row.failed_comparisons,
        iterations=row.current_iteration,
    )


def meta_patch(patch: dict[str, Any]) -> Any:
    """`metadata || patch`: updates merge keys and never drop the ones they don't name."""
    return batch_states.c.metadata.op("||")(bindparam("meta_patch", patch, type_=JSONB))


@dataclass(frozen=True, slots=True)
class EssayFit:
    """How well the model fits one essay's verdicts (cj_essays.infit/outfit/misfit)."""

    infit: float | None
    outfit: float | None
    misfit: bool | None


@dataclass(slots=True)
class EssayRow:
    essay_id: str
    text: str
    is_anchor: bool
    known_grade: str | None
    score: float | None
    se: float | None
    anchor_ref_id: str | None = None


@dataclass(frozen=True, slots=True)
class NewBatch:
    batch_id: str
    request: BatchRequest
    total_budget: int
    source: BudgetSource
    threshold_pct: float
    essays: Sequence[Essay] = ()  # as linked to its ruler (cjcore.rulers.link); empty: the request's own
    anchor_set_id: str | None = None
    target_reliability: float | None = None  # resolved at submit: the request's, else the deployment's

    @property
    def stored_essays(self) -> Sequence[Essay]:
        return self.essays or self.request.essays


@dataclass(slots=True)
class BatchSnapshot:
    """Everything a coordinator needs to (re)start a batch, read from the database alone."""

    batch_id: str
    request: BatchRequest
    state: BatchState
    counters: Counters
    threshold_pct: float
    budget_source: BudgetSource
    metadata: BatchMetadata
    essays: list[EssayRow]
    anchor_set_id: str | None = None
    attempted: list[tuple[str, str]] = field(default_factory=list)  # (a, b) of every attempt
    pending: list[Attempt] = field(default_factory=list)  # no result yet
    # Errors of the current round that no later attempt retries yet, with their error type.
    unretried: list[tuple[Attempt, ErrorType]] = field(default_factory=list)
    not_judged: int = 0  # error rows that never reached the judge (expired, cancelled)




def counters_dict(c: Counters) -> dict[str, int]:
    return {"total_budget": c.total_budget, "submitted": c.submitted, "completed": c.completed,
            "failed": c.failed, "iterations": c.iterations}
