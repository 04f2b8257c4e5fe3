"""Actor names (DESIGN §5) and lookups. The Ray dashboard and `ray list actors` show these names."""

from __future__ import annotations

SUPERVISOR = "cj-supervisor"
LIMITER = "cj-limiter"
OUTBOX = "cj-outbox"
METRICS = "cj-metrics"
ADMISSION = "cj-admission"


def coordinator(batch_id: str) -> str:
    return f"cj-batch-{batch_id}"


def provider(i: int) -> str:
    return f"cj-provider-{i}"


def scoring(i: int) -> str:
    return f"cj-scoring-{i}"
