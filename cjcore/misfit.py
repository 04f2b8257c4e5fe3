"""Misfit: which essays (and which judge) the Bradley-Terry model fits badly. Plain Python (a coordinator
imports it); the mean-squares themselves are computed with the fit (bradley_terry)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from cjcore.contracts import JudgeFitOut
from cjcore.scores import BTFit

SD_LIMIT = 2.0  # flag above the batch's mean + 2 SD: the rule CJ platforms use for scripts and judges


def misfit_flags(infit: Sequence[float | None], sd_limit: float = SD_LIMIT) -> list[bool]:
    """Flag essays whose infit is above the batch's mean + `sd_limit` SD (None: no verdicts, not flagged)."""
    known = [v for v in infit if v is not None]
    if len(known) < 3:
        return [False] * len(infit)
    limit = statistics.fmean(known) + sd_limit * statistics.stdev(known)
    return [v is not None and v > limit for v in infit]


def judge_fit(model: str, fit: BTFit) -> JudgeFitOut:
    """One judge model's fit over all its verdicts in the batch (1: as consistent as the model expects)."""
    return JudgeFitOut(model=model, comparisons=fit.n_comparisons,
                       infit=None if fit.judge_infit is None else round(fit.judge_infit, 3),
                       outfit=None if fit.judge_outfit is None else round(fit.judge_outfit, 3))
