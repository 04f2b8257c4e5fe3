"""The maths against its golden case (tests/golden.py, tests/data/golden_eng5.json), within named tolerances:
a change in the fit, its SEs, reliability, split-half, misfit or the projections shows here as a diff."""

from __future__ import annotations

import json

import pytest

from tests.golden import PATH, compute

SCORE_LOGITS = 1e-6  # the fit converges to a gradient norm far below this
SE_LOGITS = 1e-6
RELIABILITY = 1e-6
SPLIT_HALF = 1e-9  # seeded halves: the same splits every run
PROBABILITY = 1e-4  # projections are stored rounded to 4 places

GOLDEN = json.loads(PATH.read_text())
ACTUAL = compute(GOLDEN["inputs"])
EXPECTED = GOLDEN["expected"]


def test_the_inputs_are_what_the_generator_makes() -> None:
    from tests.golden import make_inputs

    assert make_inputs() == GOLDEN["inputs"]  # the seed still draws the same verdicts


@pytest.mark.parametrize("key, tolerance", [("scores", SCORE_LOGITS), ("se", SE_LOGITS), ("infit", SE_LOGITS)])
def test_per_essay_figures(key: str, tolerance: float) -> None:
    assert ACTUAL[key].keys() == EXPECTED[key].keys()
    for essay_id, value in EXPECTED[key].items():
        assert ACTUAL[key][essay_id] == pytest.approx(value, abs=tolerance), essay_id


def test_reliability_split_half_and_position() -> None:
    assert ACTUAL["ssr"] == pytest.approx(EXPECTED["ssr"], abs=RELIABILITY)
    assert ACTUAL["split_half"] == pytest.approx(EXPECTED["split_half"], abs=SPLIT_HALF)
    assert ACTUAL["position_bias"] == pytest.approx(EXPECTED["position_bias"], abs=SCORE_LOGITS)
    assert ACTUAL["position_bias_se"] == pytest.approx(EXPECTED["position_bias_se"], abs=SE_LOGITS)


def test_misfit_and_projections() -> None:
    assert ACTUAL["misfit"] == EXPECTED["misfit"]
    assert ACTUAL["projections"].keys() == EXPECTED["projections"].keys()
    for essay_id, want in EXPECTED["projections"].items():
        got = ACTUAL["projections"][essay_id]
        assert got["grade"] == want["grade"], essay_id
        assert got["probabilities"].keys() == want["probabilities"].keys()
        for grade, p in want["probabilities"].items():
            assert got["probabilities"][grade] == pytest.approx(p, abs=PROBABILITY), (essay_id, grade)
