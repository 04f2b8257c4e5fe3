import pytest

from cjcore.contracts import GRADE_SCALE
from cjcore.grade_projection import Anchor, boundaries, project

ANCHORS = [Anchor(f"a-{g}{k}", g, score, 0.3) for g, base in zip(GRADE_SCALE, range(-5, 7, 2), strict=True)
           for k, score in enumerate((base - 0.2, base + 0.2))]


def test_boundaries_lie_between_grade_means():
    grades, cuts = boundaries(ANCHORS, GRADE_SCALE)
    assert grades == list(GRADE_SCALE)
    assert cuts == pytest.approx([-4, -2, 0, 2, 4])


def test_students_get_the_band_they_fall_in_with_probabilities_summing_to_one():
    out = {p.essay_id: p for p in project({"low": (-5.5, 0.2), "mid": (1.1, 0.2), "top": (6.0, 0.2)},
                                          ANCHORS, GRADE_SCALE)}
    assert (out["low"].grade, out["mid"].grade, out["top"].grade) == ("F", "C", "A")
    for p in out.values():
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
        assert p.confidence == max(p.probabilities.values())


def test_uncertain_student_near_a_boundary_is_not_confident():
    (p,) = project({"edge": (0.0, 1.0)}, ANCHORS, GRADE_SCALE)
    assert p.confidence < 0.6


def test_inverted_anchor_means_are_pooled_so_bands_stay_ordered():
    anchors = [Anchor("c", "C", 1.0, 0.2), Anchor("b", "B", 0.5, 0.2), Anchor("a", "A", 3.0, 0.2)]
    grades, cuts = boundaries(anchors, GRADE_SCALE)
    assert grades == ["C", "B", "A"]
    assert cuts == sorted(cuts)


def test_no_anchors_no_projections():
    assert project({"s": (0.0, 0.1)}, [], GRADE_SCALE) == []


def test_the_outer_bands_are_bounded_so_a_score_just_past_the_top_cut_is_not_an_easy_a():
    """Open, the A band took all the normal mass above its cut; bounded (as wide as the B band), a score
    just above the cut is shared with B more evenly, a score far above is still A, and inner grades agree."""
    just_above = {"x": (4.3, 0.6)}
    (open_,) = project(just_above, ANCHORS, GRADE_SCALE, open_ends=True)
    (bounded,) = project(just_above, ANCHORS, GRADE_SCALE)
    assert open_.grade == bounded.grade == "A"
    assert bounded.probabilities["A"] < open_.probabilities["A"]
    (far,) = project({"far": (40.0, 0.2)}, ANCHORS, GRADE_SCALE)  # every band's mass underflows
    assert far.grade == "A" and far.confidence == 1.0
    inner = {"c": (0.9, 0.3)}
    assert project(inner, ANCHORS, GRADE_SCALE)[0].probabilities == pytest.approx(
        project(inner, ANCHORS, GRADE_SCALE, open_ends=True)[0].probabilities, abs=2e-3)


def test_a_rulers_boundaries_are_used_when_given():
    (p,) = project({"s": (0.5, 0.1)}, ANCHORS, GRADE_SCALE, bounds=(["F", "C", "A"], [-10.0, 10.0]))
    assert p.grade == "C" and set(p.probabilities) == {"F", "C", "A"}
