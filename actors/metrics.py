"""Metrics hooks (ray.util.metrics, exported by each node's metrics agent). Created lazily inside the
process that records them: a metric object must not be built at import time in a process that only
holds a handle."""

from __future__ import annotations

from functools import cache

from ray.util.metrics import Counter, Histogram


@cache
def provider_errors() -> Counter:
    return Counter("llm_provider_api_errors_total", "Provider calls that failed, by type and HTTP status",
                   tag_keys=("provider", "error_type", "http_status_code"))


@cache
def provider_requests() -> Counter:
    return Counter("llm_provider_requests_total", "Provider calls by outcome",
                   tag_keys=("provider", "model", "outcome"))


@cache
def rate_limit_wait() -> Histogram:
    return Histogram("cj_rate_limit_wait_seconds", "Time a request waited for the pool's rate limit",
                     boundaries=[0.001, 0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60])
