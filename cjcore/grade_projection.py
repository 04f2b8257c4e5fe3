"""Grade projection: anchors of known grade mark out grade bands on the BT scale.

For each grade that has anchors, take the mean anchor score; force the means to rise with the grade
(pool-adjacent-violators, so one misplaced anchor cannot invert two bands); put each boundary midway
between neighbouring means. A student's score is uncertain (its SE, plus the anchors' own uncertainty),
so its probability of each grade is the normal mass between that grade's boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Anchor:
    essay_id: str
    grade: str
    score: float
    se: float


@dataclass(frozen=True, slots=True)
class Projection:
    essay_id: str
    grade: str
    probabilities: dict[str, float]
    confidence: float


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _isotonic(values: list[float], weights: list[float]) -> list[float]:
    """Pool adjacent violators: the closest non-decreasing sequence (weighted least squares)."""
    blocks: list[list[float]] = []  # [mean, weight, count]
    for v, w in zip(values, weights, strict=True):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    out: list[float] = []
    for m, _, c in blocks:
        out += [m] * int(c)
    return out


def boundaries(anchors: Sequence[Anchor], scale: Sequence[str]) -> tuple[list[str], list[float]]:
    """Grades that have anchors (low → high) and the len-1 boundaries between them."""
    by_grade: dict[str, list[float]] = {}
    for a in anchors:
        by_grade.setdefault(a.grade, []).append(a.score)
    grades = [g for g in scale if g in by_grade]
    means = _isotonic([sum(by_grade[g]) / len(by_grade[g]) for g in grades], [len(by_grade[g]) for g in grades])
    cuts = [(means[i] + means[i + 1]) / 2.0 for i in range(len(means) - 1)]
    return grades, cuts


def project(
    students: Mapping[str, tuple[float, float]], anchors: Sequence[Anchor], scale: Sequence[str]
) -> list[Projection]:
    """Project every student (essay_id → (score, se)); no anchors → no projections."""
    if not anchors:
        return []
    grades, cuts = boundaries(anchors, scale)
    anchor_var = sum(a.se**2 for a in anchors) / len(anchors)
    out = []
    for essay_id, (score, se) in students.items():
        sigma = math.sqrt(se**2 + anchor_var / 2.0) or 1e-9
        edges = [-math.inf, *cuts, math.inf]
        probs = {}
        for i, g in enumerate(grades):
            lo = 0.0 if edges[i] == -math.inf else _phi((edges[i] - score) / sigma)
            hi = 1.0 if edges[i + 1] == math.inf else _phi((edges[i + 1] - score) / sigma)
            probs[g] = max(0.0, hi - lo)
        total = sum(probs.values()) or 1.0
        probs = {g: round(p / total, 4) for g, p in probs.items()}
        best = max(grades, key=lambda g: probs[g])
        out.append(Projection(essay_id, best, probs, probs[best]))
    return out
