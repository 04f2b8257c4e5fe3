"""The golden case of the maths (tests/data/golden_eng5.json): 240 verdicts on the 24 ENG5 essays drawn with a
fixed seed from their known qualities (with a preference for the essay shown first, and one essay judged by a
coin), and what the fit, its SEs,
reliability, split-half, misfit and grade projections made of them when the file was written. A change in the
maths shows as a diff of this file, within the named tolerances of tests/test_golden.py.

    python -m tests.golden      # rewrite the file after a deliberate change, and commit the diff with it
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any

from cjcore import bradley_terry
from cjcore.contracts import GRADE_SCALE, Comparison, Winner
from cjcore.grade_projection import Anchor, project
from cjcore.misfit import misfit_flags
from cjcore.sample import eng5_request, eng5_truth

PATH = Path(__file__).parent / "data" / "golden_eng5.json"
SEED, VERDICTS, POSITION_BIAS, ALPHA = 2026, 240, 0.3, bradley_terry.DEFAULT_ALPHA
ERRATIC = "student-03"  # judged by a coin, whatever its quality: what infit is there to flag


def make_inputs() -> dict[str, Any]:
    request, truth = eng5_request(), eng5_truth()
    quality = {e["essay_id"]: truth[hashlib.sha256(e["text"].encode()).hexdigest()] for e in request["essays"]}
    rng = random.Random(SEED)
    ids = sorted(quality)
    verdicts = []
    for _ in range(VERDICTS):
        a, b = rng.sample(ids, 2)
        p_a = 0.5 if ERRATIC in (a, b) else 1.0 / (1.0 + math.exp(-(quality[a] - quality[b] + POSITION_BIAS)))
        verdicts.append([a, b, "essay_a" if rng.random() < p_a else "essay_b"])
    essays = [{"essay_id": e["essay_id"], "is_anchor": bool(e.get("is_anchor")), "known_grade": e.get("known_grade")}
              for e in request["essays"]]
    return {"seed": SEED, "alpha": ALPHA, "essays": essays, "verdicts": verdicts}


def compute(inputs: dict[str, Any]) -> dict[str, Any]:
    ids = [e["essay_id"] for e in inputs["essays"]]
    comparisons = [Comparison(a, b, Winner(w)) for a, b, w in inputs["verdicts"]]
    fit = bradley_terry.fit(ids, comparisons, inputs["alpha"])
    scores = dict(zip(fit.essay_ids, fit.scores, strict=True))
    ses = dict(zip(fit.essay_ids, fit.se, strict=True))
    anchors = [Anchor(e["essay_id"], e["known_grade"], scores[e["essay_id"]], ses[e["essay_id"]])
               for e in inputs["essays"] if e["is_anchor"]]
    students = {e["essay_id"]: (scores[e["essay_id"]], ses[e["essay_id"]]) for e in inputs["essays"]
                if not e["is_anchor"]}
    flags = misfit_flags(fit.infit)
    return {
        "scores": scores, "se": ses, "ssr": fit.ssr,
        "split_half": bradley_terry.split_half(ids, comparisons, inputs["alpha"], seed=inputs["seed"]),
        "position_bias": fit.position_bias, "position_bias_se": fit.position_bias_se,
        "infit": dict(zip(fit.essay_ids, fit.infit, strict=True)),
        "misfit": sorted(e for e, flagged in zip(fit.essay_ids, flags, strict=True) if flagged),
        "projections": {p.essay_id: {"grade": p.grade, "probabilities": p.probabilities}
                        for p in project(students, anchors, GRADE_SCALE)},
    }


def main() -> None:
    inputs = make_inputs()
    PATH.write_text(json.dumps({"about": __doc__.split("\n\n")[0], "inputs": inputs, "expected": compute(inputs)},
                               indent=1, sort_keys=True) + "\n")
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()
