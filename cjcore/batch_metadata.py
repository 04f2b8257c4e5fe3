"""What a batch records beside its counters (`cj_batch_states.metadata`, JSONB), declared once.

Written and read only through `BatchMetadata`: submission (resolved once, at submit), the latest scoring's
reliability, position and completion figures, the judges' fit, how an early end was asked for, and an error.
A write is a patch: only the fields a writer set are sent, and PostgreSQL merges them into the row's object
(`metadata || patch`), so writers never drop each other's keys. `version` says which shape wrote a row;
a row without it (written before this model) reads as version 1, and keys this version does not know are kept
in the row and ignored here, so an older or newer row still reads.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cjcore.contracts import BudgetSource, JudgeFitOut, PositionOut, ReliabilityOut

VERSION = 2  # 1: the untyped dicts of before (the same keys, no `version`, no `target_reliability`)


class CompletionMeta(BaseModel):
    """The completion figures of the latest scoring (DESIGN §4.2's `completion`, plus what the stop rule needs)."""

    model_config = ConfigDict(extra="ignore")
    denominator: int
    threshold_pct: float
    completion_pct: float
    stability_threshold: float | None = None
    last_max_change: float | None = None
    new_valid: int = 0  # valid verdicts the round added
    valid_at_fit: int = 0  # valid verdicts at that scoring: the next round counts new ones from here


class Stopping(BaseModel):
    """An early end asked for (the provider out): the batch ends in `state` once what is at the provider lands."""

    state: str
    reason: str
    error: str | None = None


class BatchMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    version: int = VERSION
    # Submission, resolved once when the batch is stored (the SQL of the admission queue reads n_essays).
    budget_source: BudgetSource | None = None
    n_essays: int | None = None
    submission_id: str | None = None
    target_reliability: float | None = None  # the stop rule's target: the request's, else the deployment's
    # The latest scoring.
    reliability: ReliabilityOut | None = None
    position: PositionOut | None = None
    completion: CompletionMeta | None = None
    held: list[str] = Field(default_factory=list)  # a ruler's anchors held at their calibrated scores
    judges: list[JudgeFitOut] = Field(default_factory=list)
    error: str | None = None
    # An early end asked for, so an activation after a restart keeps to it.
    cancel_requested: bool = False
    stopping: Stopping | None = None

    @classmethod
    def read(cls, raw: dict[str, Any] | None) -> BatchMetadata:
        """A row's metadata, whichever version wrote it."""
        data = dict(raw or {})
        data.setdefault("version", 1)
        return cls.model_validate(data)

    def patch(self) -> dict[str, Any]:
        """The fields this writer set (with the version), as JSON to merge into the row."""
        self.version = VERSION
        return self.model_dump(mode="json", exclude_unset=True)
