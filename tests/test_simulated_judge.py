"""The simulated judge (DESIGN §4.5): quality per essay, and noise of its own for an erratic essay."""

import json
import random

import pytest

from simprovider.judge import Judge, load_truth, text_sha256


def test_an_essay_with_noise_of_its_own_is_judged_erratically(tmp_path):
    path = tmp_path / "truth.json"
    path.write_text(json.dumps({text_sha256("strong"): 2.0, text_sha256("weak"): -2.0,
                                text_sha256("erratic"): {"quality": 2.0, "noise": 6.0}}))
    judge = Judge(load_truth(path), noise=0.0, position_bias=0.0, rng=random.Random(1))
    consistent = sum(judge.a_wins("strong", "weak")[0] for _ in range(2000)) / 2000
    erratic = sum(judge.a_wins("erratic", "weak")[0] for _ in range(2000)) / 2000
    print(f"same quality: consistent essay wins {consistent:.2f}, erratic one {erratic:.2f}")
    assert consistent > 0.97  # sigmoid(4) = 0.98
    assert 0.6 < erratic < 0.85  # the same quality gap, drowned in its own noise


def test_a_bad_truth_entry_is_refused_naming_it(tmp_path):
    path = tmp_path / "truth.json"
    path.write_text(json.dumps({"abc": {"noise": 1.0}}))
    with pytest.raises(ValueError, match=r"truth\[abc\]"):
        load_truth(path)


def test_with_a_seed_each_verdict_depends_on_its_correlation_id_not_on_arrival_order():
    from simprovider.server import SimConfig, SimProvider

    calls = [(f"cid-{i}", (f"essay {i}", f"essay {i + 1}")) for i in range(200)]

    def verdicts(order: list[tuple[str, tuple[str, str]]]) -> dict[str, str]:
        sim = SimProvider(SimConfig(noise=2.0, seed=7))  # noisy: a verdict is a coin toss of its own generator
        return {cid: sim._content(essays, None, cid)[0][0]["input"]["winner"] for cid, essays in order}

    forward, backward = verdicts(calls), verdicts(calls[::-1])
    assert forward == backward
    assert 40 < sum(w == "A" for w in forward.values()) < 160  # not all one way: the noise is drawn
