"""Rulers (DESIGN §4.6): anchor sets calibrated once, so every batch of an assignment is on one scale.

`anchors register FILE` judges a set's anchors against each other (an ordinary batch of anchors only),
then stores each anchor's score and SE and the grade boundaries read off them. A batch citing the set
(`anchor_set_id`, or essays citing an `anchor_ref_id` with no text) compares its students with each other
and with the set's anchors, holds the anchors at their calibrated scores, and grades from the set's
boundaries. Pure: the file's model, the ruler's shape, and how a request is linked to a ruler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cjcore.contracts import (
    DEFAULT_INSTRUCTIONS,
    GRADE_SCALE,
    MAX_INSTRUCTIONS_CHARS,
    BatchRequest,
    Essay,
    LLMConfig,
    no_control_chars,
    parse_model,
)
from cjcore.errors import InvalidRequest

SET_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$"


class AnchorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    anchor_ref_id: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1)
    known_grade: str

    @field_validator("anchor_ref_id", "text")
    @classmethod
    def _printable(cls, v: str) -> str:
        return no_control_chars(v)

    @field_validator("known_grade")
    @classmethod
    def _grade_known(cls, v: str) -> str:
        if v not in GRADE_SCALE:
            raise ValueError(f"unknown grade {v!r}; expected one of {', '.join(GRADE_SCALE)}")
        return v


class AnchorSetFile(BaseModel):
    """What `anchors register FILE` reads."""

    model_config = ConfigDict(extra="forbid")

    anchor_set_id: str = Field(pattern=SET_ID_PATTERN)
    assignment_id: str | None = None
    course_code: str | None = None
    instructions: str = Field(default=DEFAULT_INSTRUCTIONS, min_length=1, max_length=MAX_INSTRUCTIONS_CHARS)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    max_comparisons: int | None = Field(default=None, ge=1)  # calibration budget; default: every pair once
    anchors: list[AnchorIn]

    @field_validator("anchors")
    @classmethod
    def _usable(cls, v: list[AnchorIn]) -> list[AnchorIn]:
        if len(v) < 3:
            raise ValueError(f"at least 3 anchors are needed to calibrate, got {len(v)}")
        refs = [a.anchor_ref_id for a in v]
        if dup := next((r for r in refs if refs.count(r) > 1), None):
            raise ValueError(f"duplicate anchor_ref_id {dup!r}")
        if len({a.known_grade for a in v}) < 2:
            raise ValueError("anchors of at least 2 grades are needed for grade boundaries")
        return v


def parse_anchor_set(data: Any) -> AnchorSetFile:
    return parse_model(AnchorSetFile, data, "anchor set")


def check_anchor_bounds(anchor_set: AnchorSetFile, max_chars: int) -> None:
    for i, a in enumerate(anchor_set.anchors):
        if len(a.text) > max_chars:
            raise InvalidRequest(f"anchors[{i}].text", f"at most {max_chars:,} characters (CJ_MAX_ESSAY_CHARS), "
                                 f"got {len(a.text):,}")


def in_use(anchor_set_id: str, batches: int) -> InvalidRequest:
    """Re-registering a set that batches were graded against would move their scale: refused."""
    return InvalidRequest("anchor_set_id", f"anchor set {anchor_set_id!r} is used by {batches} "
                          f"batch{'es' if batches != 1 else ''}; register the new calibration under a new id")


def calibration_request(anchor_set: AnchorSetFile, batch_id: str) -> BatchRequest:
    """The batch that calibrates a set: its anchors only, judged against each other, by default every pair
    (a batch never repeats a pair before all are used, nor goes past them), not stopped early by
    reliability (its scores are reused by every batch that cites the set)."""
    n = len(anchor_set.anchors)
    return BatchRequest(
        batch_id=batch_id, assignment_id=anchor_set.assignment_id, course_code=anchor_set.course_code,
        instructions=anchor_set.instructions, llm=anchor_set.llm, completion_threshold_pct=100,
        max_comparisons=anchor_set.max_comparisons or n * (n - 1) // 2, target_reliability=1.0,
        essays=[Essay(essay_id=a.anchor_ref_id, text=a.text, is_anchor=True, known_grade=a.known_grade,
                      anchor_ref_id=a.anchor_ref_id) for a in anchor_set.anchors],
    )


@dataclass(frozen=True, slots=True)
class RulerAnchor:
    anchor_ref_id: str
    text: str
    known_grade: str
    score: float
    se: float


@dataclass(frozen=True, slots=True)
class Ruler:
    anchor_set_id: str
    grades: tuple[str, ...]  # with anchors, low → high
    cuts: tuple[float, ...]  # boundaries between them
    anchors: dict[str, RulerAnchor]  # by anchor_ref_id
    instructions: str
    llm: dict[str, Any]
    reliability: float | None = None


def cited_refs(request: BatchRequest) -> list[str]:
    return [e.anchor_ref_id for e in request.essays if e.cites_registry and e.anchor_ref_id]


def link(request: BatchRequest, ruler: Ruler) -> list[Essay]:
    """The batch's essays on the ruler: its own essays, cited anchors filled in from the ruler and, when the
    request names the set, every anchor of the set (essay_id = anchor_ref_id). Refused naming the field."""
    out: list[Essay] = []
    for i, e in enumerate(request.essays):
        if not e.cites_registry:
            out.append(e)
            continue
        anchor = ruler.anchors.get(e.anchor_ref_id or "")
        if anchor is None:
            raise InvalidRequest(f"essays[{i}].anchor_ref_id",
                                 f"{e.anchor_ref_id!r} is not an anchor of set {ruler.anchor_set_id!r}")
        if e.known_grade is not None and e.known_grade != anchor.known_grade:
            raise InvalidRequest(f"essays[{i}].known_grade", f"{e.known_grade!r} differs from the registered "
                                 f"grade {anchor.known_grade!r} of anchor {anchor.anchor_ref_id!r}")
        out.append(Essay(essay_id=e.essay_id, text=anchor.text, is_anchor=True, known_grade=anchor.known_grade,
                         anchor_ref_id=anchor.anchor_ref_id))
    if request.anchor_set_id is not None:
        cited = {e.anchor_ref_id for e in out if e.anchor_ref_id in ruler.anchors and e.is_anchor}
        taken = {e.essay_id for e in out}
        for ref, anchor in ruler.anchors.items():
            if ref in cited:
                continue
            if ref in taken:
                raise InvalidRequest("essays", f"essay_id {ref!r} is also an anchor_ref_id of anchor set "
                                     f"{ruler.anchor_set_id!r}; rename the essay")
            out.append(Essay(essay_id=ref, text=anchor.text, is_anchor=True, known_grade=anchor.known_grade,
                             anchor_ref_id=ref))
    return out


def held_scores(
    essays: Sequence[tuple[str, str | None, str]], ruler: Ruler | None
) -> dict[str, tuple[float, float]]:
    """essay_id → (score, se) for the batch's essays that are the ruler's anchors, given as (essay_id,
    anchor_ref_id, text): the same text as registered, so the calibrated score is this essay's."""
    if ruler is None:
        return {}
    return {eid: (ruler.anchors[ref].score, ruler.anchors[ref].se) for eid, ref, text in essays
            if ref is not None and ref in ruler.anchors and ruler.anchors[ref].text == text}
