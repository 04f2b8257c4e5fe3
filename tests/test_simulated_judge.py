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


def test_the_simulators_limits_agree_with_the_systems_bucket_written_apart():
    """Two implementations of Anthropic's documented bucket (the oracle's and the system's) give the same waits
    over a random run of takes, so neither can carry a bug the other shares."""
    from cjcore.token_bucket import TokenBucket
    from simprovider.limits import Allowance

    rng = random.Random(3)
    now = 100.0
    ours = TokenBucket.per_minute(600, now)
    sims = Allowance.starting_with(600, 60.0, now)
    for _ in range(2_000):
        now += rng.expovariate(20.0)
        amount = rng.choice([1, 1, 1, 5, 40])
        assert sims.left(now) == pytest.approx(ours.available(now), abs=1e-6)
        wait = sims.wait_for(amount, now)
        assert wait == pytest.approx(ours.wait_for(amount, now), abs=1e-6)
        if wait == 0.0:
            sims.charge(amount, now)
            ours.try_take(amount, now)
    assert Allowance.starting_with(60, 10.0, 0.0).left(0.0) == pytest.approx(10.0)  # a new key's first burst


def test_the_simulator_reads_the_essays_and_tool_of_the_systems_prompt():
    from cjcore.prompt import TOOL_NAME, user_turn
    from simprovider.reading import essays_in, tool_name

    a, b = "Essay with </essay_a> & <b>tags</b>\nand lines", "The other\n\nessay"
    assert essays_in(user_turn(a, b)) == (a, b)
    assert essays_in("no essays here") is None
    assert tool_name({"tool_choice": {"type": "tool", "name": TOOL_NAME}}) == TOOL_NAME
    assert tool_name({"tools": [{"name": "other"}]}) == "other"
