"""Registered anchor sets (rulers, DESIGN §4.6): stored once calibrated, read by every batch citing them.
A set that batches have used is immutable: re-registering its id is refused."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select

from cjcore.rulers import AnchorSetFile, Ruler, RulerAnchor, in_use
from storage.records import Store
from storage.schema import anchor_sets, anchors, batches


class RulerStore(Store):
    """Anchor sets (rulers): registered, read, and whether batches use them."""

    async def get(self, anchor_set_id: str) -> Ruler | None:
        async with self.engine.connect() as conn:
            head = (await conn.execute(select(anchor_sets).where(anchor_sets.c.anchor_set_id == anchor_set_id))
                    ).one_or_none()
            if head is None:
                return None
            rows = (await conn.execute(select(anchors).where(anchors.c.anchor_set_id == anchor_set_id)
                                       .order_by(anchors.c.score))).all()
        return Ruler(
            anchor_set_id=anchor_set_id, grades=tuple(head.grades), cuts=tuple(head.boundaries),
            anchors={r.anchor_ref_id: RulerAnchor(r.anchor_ref_id, r.text, r.known_grade, r.score, r.se) for r in rows},
            instructions=head.instructions, llm=dict(head.llm), reliability=head.reliability,
        )

    async def sets_with(self, refs: Sequence[str]) -> dict[str, list[str]]:
        """anchor_ref_id → the sets that have an anchor of that id."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(anchors.c.anchor_ref_id, anchors.c.anchor_set_id)
                                       .where(anchors.c.anchor_ref_id.in_(list(refs))))).all()
        out: dict[str, list[str]] = {}
        for ref, set_id in rows:
            out.setdefault(ref, []).append(set_id)
        return out

    async def grades_of(self, refs: Sequence[str]) -> dict[str, set[str]]:
        """anchor_ref_id → the known grades registered for it (in any set)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(anchors.c.anchor_ref_id, anchors.c.known_grade)
                                       .where(anchors.c.anchor_ref_id.in_(list(refs))))).all()
        out: dict[str, set[str]] = {}
        for ref, grade in rows:
            out.setdefault(ref, set()).add(grade)
        return out

    async def used_by(self, anchor_set_id: str) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(batches)
                                           .where(batches.c.anchor_set_id == anchor_set_id))).scalar_one())

    async def save(
        self, anchor_set: AnchorSetFile, calibration_batch_id: str, scores: dict[str, tuple[float, float]],
        grades: Sequence[str], cuts: Sequence[float], reliability: float | None,
    ) -> None:
        """Store (or replace, if no batch has used it) a calibrated set, in one transaction."""
        set_id = anchor_set.anchor_set_id
        async with self.engine.begin() as conn:
            await conn.execute(select(anchor_sets.c.anchor_set_id).where(anchor_sets.c.anchor_set_id == set_id)
                               .with_for_update())
            used = (await conn.execute(select(func.count()).select_from(batches)
                                       .where(batches.c.anchor_set_id == set_id))).scalar_one()
            if used:
                raise in_use(set_id, used)
            await conn.execute(delete(anchor_sets).where(anchor_sets.c.anchor_set_id == set_id))
            await conn.execute(insert(anchor_sets).values(
                anchor_set_id=set_id, assignment_id=anchor_set.assignment_id, course_code=anchor_set.course_code,
                instructions=anchor_set.instructions, llm=anchor_set.llm.model_dump(), grades=list(grades),
                boundaries=[round(c, 6) for c in cuts], calibration_batch_id=calibration_batch_id,
                reliability=reliability))
            await conn.execute(insert(anchors), [
                {"anchor_set_id": set_id, "anchor_ref_id": a.anchor_ref_id, "text": a.text,
                 "text_sha256": hashlib.sha256(a.text.encode()).hexdigest(), "known_grade": a.known_grade,
                 "score": scores[a.anchor_ref_id][0], "se": scores[a.anchor_ref_id][1]}
                for a in anchor_set.anchors
            ])

    async def list(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(anchor_sets.c.anchor_set_id, anchor_sets.c.assignment_id, anchor_sets.c.course_code,
                       anchor_sets.c.grades, anchor_sets.c.reliability, anchor_sets.c.created_at,
                       select(func.count()).select_from(anchors)
                       .where(anchors.c.anchor_set_id == anchor_sets.c.anchor_set_id)
                       .scalar_subquery().label("anchors"),
                       select(func.count()).select_from(batches)
                       .where(batches.c.anchor_set_id == anchor_sets.c.anchor_set_id).scalar_subquery()
                       .label("batches"))
                .order_by(anchor_sets.c.created_at))).mappings().all()
        return [{**r, "created_at": r["created_at"].isoformat()} for r in rows]

    async def show(self, anchor_set_id: str) -> dict[str, Any] | None:
        ruler = await self.get(anchor_set_id)
        if ruler is None:
            return None
        async with self.engine.connect() as conn:
            head = (await conn.execute(select(anchor_sets).where(anchor_sets.c.anchor_set_id == anchor_set_id))).one()
        return {
            "anchor_set_id": anchor_set_id, "assignment_id": head.assignment_id, "course_code": head.course_code,
            "llm": ruler.llm, "calibration_batch_id": head.calibration_batch_id, "reliability": ruler.reliability,
            "grades": list(ruler.grades), "boundaries": list(ruler.cuts),
            "used_by_batches": await self.used_by(anchor_set_id),
            "anchors": [{"anchor_ref_id": a.anchor_ref_id, "known_grade": a.known_grade,
                         "score": round(a.score, 4), "se": round(a.se, 4)} for a in ruler.anchors.values()],
        }
