import pytest

from cjcore.contracts import BatchRequest, denominator, parse_batch_request
from cjcore.errors import InvalidRequest


def _two(**over):
    return {"essays": [{"essay_id": "a", "text": "first"}, {"essay_id": "b", "text": "second"}], **over}


BAD = [
    ("no essays", {"essays": []}, "essays"),
    ("essays missing", {}, "essays"),
    ("one essay", {"essays": [{"essay_id": "a", "text": "x"}]}, "essays"),
    ("duplicate ids", {"essays": [{"essay_id": "a", "text": "x"}, {"essay_id": "a", "text": "y"}]}, "essays"),
    ("empty text", {"essays": [{"essay_id": "a", "text": "  "}, {"essay_id": "b", "text": "y"}]}, "essays[0].text"),
    ("negative budget", _two(max_comparisons=-5), "max_comparisons"),
    ("zero budget", _two(max_comparisons=0), "max_comparisons"),
    ("anchor without grade",
     {"essays": [{"essay_id": "a", "text": "x", "is_anchor": True}, {"essay_id": "b", "text": "y"}]},
     "essays[0].known_grade"),
    ("unknown grade",
     {"essays": [{"essay_id": "a", "text": "x", "is_anchor": True, "known_grade": "Z"},
                 {"essay_id": "b", "text": "y"}]},
     "essays[0].known_grade"),
    ("threshold over 100", _two(completion_threshold_pct=120), "completion_threshold_pct"),
    ("bad batch id", _two(batch_id="has space"), "batch_id"),
    ("unknown field", _two(colour="red"), "colour"),
    ("not an object", ["essays"], "request"),
    ("model not an id", _two(llm={"model": "m" * 101}), "llm.model"),  # a free-text model would grow the limiter
]


@pytest.mark.parametrize(("case", "data", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_naming_the_field(case, data, field):
    with pytest.raises(InvalidRequest) as err:
        parse_batch_request(data)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_a_valid_request_keeps_every_field():
    req = parse_batch_request(
        _two(assignment_id="x1", max_comparisons=10, completion_threshold_pct=80, pair_generation_seed=3,
             llm={"model": "claude-haiku-4-5", "max_tokens": 256})
    )
    assert isinstance(req, BatchRequest)
    assert (req.max_comparisons, req.completion_threshold_pct, req.pair_generation_seed) == (10, 80, 3)
    assert BatchRequest.model_validate_json(req.model_dump_json()) == req


@pytest.mark.parametrize(("budget", "n", "expected"), [(350, 4, 6), (100, 24, 100), (10, 2, 1), (1, 50, 1)])
def test_denominator_is_the_budget_or_all_pairs(budget, n, expected):
    assert denominator(budget, n) == expected


def _with_text(text):
    return {"essays": [{"essay_id": "a", "text": text}, {"essay_id": "b", "text": "second"}]}


@pytest.mark.parametrize("char", ["\u202e", "\u202a", "\u2066", "\u2069", "\U000e0041", "\U000e007f", "\ud800"],
                         ids=["RLO", "LRE", "LRI", "PDI", "tag A", "cancel tag", "lone surrogate"])
def test_invisible_steering_characters_and_lone_surrogates_are_refused_naming_the_field(char):
    with pytest.raises(InvalidRequest) as err:
        parse_batch_request(_with_text(f"An essay{char} with a hidden part."))
    assert err.value.field == "essays[0].text"
    assert f"U+{ord(char):04X}" in str(err.value)
    with pytest.raises(InvalidRequest) as err:
        parse_batch_request({**_two(), "instructions": f"Judge{char} this."})
    assert err.value.field == "instructions"


def test_the_joiners_real_scripts_need_pass():
    request = parse_batch_request(_with_text("नमस्\u200dते and می\u200cخواهم"))
    assert "\u200d" in (request.essays[0].text or "") and "\u200c" in (request.essays[0].text or "")
