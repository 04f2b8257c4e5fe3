"""The simulated judge: latent quality per essay, position bias and noise (pure, seedable)."""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def default_quality(text: str) -> float:
    """A deterministic quality in [-2, 2) for essays the truth file does not know."""
    return (int(text_sha256(text)[:8], 16) / 2**32 - 0.5) * 4.0


def load_truth(path: str | Path | None) -> dict[str, float]:
    """A truth file is JSON: {"<sha256 of essay text>": quality, …}."""
    if path is None:
        return {}
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: truth file must be a JSON object of sha256 → quality")
    return {str(k): float(v) for k, v in data.items()}


class Judge:
    def __init__(self, truth: dict[str, float], noise: float, position_bias: float, rng: random.Random):
        self.truth = truth
        self.noise = noise
        self.position_bias = position_bias
        self.rng = rng

    def quality(self, text: str) -> float:
        q = self.truth.get(text_sha256(text))
        return default_quality(text) if q is None else q

    def a_wins(self, text_a: str, text_b: str) -> tuple[bool, float]:
        """logit = q(A) − q(B) + position_bias + N(0, noise²); A wins with probability sigmoid(logit)."""
        logit = self.quality(text_a) - self.quality(text_b) + self.position_bias
        if self.noise > 0:
            logit += self.rng.gauss(0.0, self.noise)
        p = 1.0 / (1.0 + math.exp(-logit))
        return self.rng.random() < p, p
