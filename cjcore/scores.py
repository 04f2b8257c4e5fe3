"""Score bookkeeping the coordinator needs, without numpy or choix (a coordinator is one process per
batch, so its imports are kept light): the fit's shape, wins by position, score change."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cjcore.contracts import Comparison, Winner


@dataclass(frozen=True, slots=True)
class BTFit:
    essay_ids: tuple[str, ...]
    scores: tuple[float, ...]  # mean zero, logit scale
    se: tuple[float, ...]
    ssr: float  # reliability var / (var + mean SE²) of the fitted essays (bradley_terry.reliability)
    n_comparisons: int
    position_bias: float = 0.0  # h: the judge's log-odds preference for the essay shown first
    position_bias_se: float = 0.0
    infit: tuple[float | None, ...] = ()  # per essay; None: no valid comparison yet
    outfit: tuple[float | None, ...] = ()
    judge_infit: float | None = None  # over every verdict: the judge's consistency
    judge_outfit: float | None = None

    def score_of(self) -> dict[str, float]:
        return dict(zip(self.essay_ids, self.scores, strict=True))

    def se_of(self) -> dict[str, float]:
        return dict(zip(self.essay_ids, self.se, strict=True))


def position_wins(comparisons: Sequence[Comparison]) -> tuple[int, int]:
    """How many valid results the essay shown first (A) and second (B) won."""
    a = sum(1 for c in comparisons if c.winner is Winner.ESSAY_A)
    b = sum(1 for c in comparisons if c.winner is Winner.ESSAY_B)
    return a, b


def max_score_change(previous: dict[str, float], current: dict[str, float]) -> float | None:
    """Largest absolute change of any essay's score between two fits; None if there is no previous fit."""
    if not previous or set(previous) != set(current):
        return None
    return max(abs(current[k] - previous[k]) for k in current)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (scipy's: ties take their average rank): the benches' and tests' one."""
    from scipy import stats

    return float(stats.spearmanr(x, y).statistic)
