"""Actor names (DESIGN §5) and lookups. The Ray dashboard and `ray list actors` show these names."""

from __future__ import annotations

import zlib

SUPERVISOR = "cj-supervisor"
LIMITER = "cj-limiter"
OUTBOX = "cj-outbox"
METRICS = "cj-metrics"
ADMISSION = "cj-admission"


HOST_PREFIX = "cj-coordinators-"


def coordinator_host(i: int) -> str:
    return f"{HOST_PREFIX}{i}"


def host_index(batch_id: str, hosts: int) -> int:
    """Which of `hosts` coordinator hosts a batch's messages go to (stable for a deployment's host count)."""
    return zlib.crc32(batch_id.encode()) % hosts


def provider(i: int) -> str:
    return f"cj-provider-{i}"


def scoring(i: int) -> str:
    return f"cj-scoring-{i}"
