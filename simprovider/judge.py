"""The simulated judge: latent quality per essay, position bias and noise (pure, seedable)."""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping
from pathlib import Path


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def default_quality(text: str) -> float:
    """A deterministic quality in [-2, 2) for essays the truth file does not know."""
    return (int(text_sha256(text)[:8], 16) / 2**32 - 0.5) * 4.0


Truth = Mapping[str, float | Mapping[str, float]]


def _entry(key: str, value: object) -> tuple[float, float]:
    """(quality, own noise) of one truth entry: a number, or {"quality": q, "noise": x} (DESIGN §4.5)."""
    if isinstance(value, dict):
        if "quality" not in value or not set(value) <= {"quality", "noise"}:
            raise ValueError(f"truth[{key}]: expected a number or {{\"quality\": q, \"noise\": x}}")
        return float(value["quality"]), float(value.get("noise", 0.0))
    return float(value), 0.0  # type: ignore[arg-type]


def load_truth(path: str | Path | None) -> Truth:
    """A truth file is JSON: {"<sha256 of essay text>": quality or {"quality": q, "noise": x}, …}."""
    if path is None:
        return {}
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: truth file must be a JSON object of sha256 → quality")
    for k, v in data.items():
        _entry(k, v)  # refuse a bad entry at load, naming it
    return {str(k): v for k, v in data.items()}


class Judge:
    def __init__(self, truth: Truth, noise: float, position_bias: float, rng: random.Random):
        parsed = {k: _entry(k, v) for k, v in truth.items()}
        self.truth = {k: q for k, (q, _) in parsed.items()}
        self.own_noise = {k: x for k, (_, x) in parsed.items() if x > 0}  # erratic essays
        self.noise = noise
        self.position_bias = position_bias
        self.rng = rng

    def quality(self, text: str) -> float:
        q = self.truth.get(text_sha256(text))
        return default_quality(text) if q is None else q

    def a_wins(self, text_a: str, text_b: str, rng: random.Random | None = None) -> tuple[bool, float]:
        """logit = q(A) − q(B) + position_bias + N(0, noise²), where an essay with noise of its own adds
        its variance to the call's; A wins with probability sigmoid(logit). `rng`: this verdict's own
        generator (default: the judge's)."""
        rng = rng or self.rng
        logit = self.quality(text_a) - self.quality(text_b) + self.position_bias
        noise = math.sqrt(self.noise**2 + sum(self.own_noise.get(text_sha256(t), 0.0) ** 2 for t in (text_a, text_b)))
        if noise > 0:
            logit += rng.gauss(0.0, noise)
        p = 1.0 / (1.0 + math.exp(-logit))
        return rng.random() < p, p
