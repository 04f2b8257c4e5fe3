"""The built-in ENG5-shaped sample batch (12 anchors, two per grade F–A, and 12 students) and the latent
quality of each essay, from which the demo's simulated judge gets its truth file."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from typing import Any


def _load() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath("eng5.json").read_text())


def eng5_request() -> dict[str, Any]:
    return _load()["request"]


def eng5_truth() -> dict[str, float]:
    """sha256 of essay text → latent quality, the simulated judge's truth."""
    data = _load()
    return {
        hashlib.sha256(e["text"].encode()).hexdigest(): data["quality"][e["essay_id"]]
        for e in data["request"]["essays"]
    }


def eng5_quality() -> dict[str, float]:
    """essay_id → latent quality, for checking a ranking against the truth."""
    return dict(_load()["quality"])
