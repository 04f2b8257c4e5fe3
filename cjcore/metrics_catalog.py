"""Every metric the deployment exports (issue 7), by name: type, help, labels and histogram buckets.

One list used by the `cj-metrics` actor (which serves them at /metrics), by the actors that record
them, and by the tests that check dashboards and alert rules only name metrics that exist. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    from_database: bool = False  # read from PostgreSQL at scrape time: always equal to the record


SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
UNIT = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)
LOGIT = (-2, -1, -0.5, -0.25, -0.1, 0, 0.1, 0.25, 0.5, 1, 2)

CATALOG: tuple[Metric, ...] = (
    # Batches (from the database: they agree with it whatever happened to the actors)
    Metric("cj_batches", "gauge", "Batches by state", ("state",), from_database=True),
    Metric("cj_comparisons_total", "counter",
           "Comparison attempts by outcome: submitted, completed (valid), failed (errors, expired included), "
           "expired, retried", ("outcome",), from_database=True),
    Metric("cj_stuck_batches", "gauge", "Non-terminal batches with no activity for CJ_BATCH_IDLE_S",
           from_database=True),
    Metric("cj_completed_without_projections", "gauge",
           "COMPLETED batches with anchors and students but no grade projections", from_database=True),
    Metric("cj_outbox_unpublished", "gauge", "Outbox events not yet published", from_database=True),
    Metric("cj_batch_duration_seconds", "histogram", "Submit to terminal state", ("state",), SECONDS),
    Metric("cj_finalize_lag_seconds", "histogram", "Last needed result recorded to the terminal state", (),
           SECONDS),
    Metric("cj_admission_wait_seconds", "histogram", "Submit to admission (QUEUED → a live coordinator)", (),
           SECONDS),
    # Provider
    Metric("llm_provider_requests_total", "counter", "Provider calls by outcome", ("provider", "model", "outcome")),
    Metric("llm_provider_api_errors_total", "counter", "Provider calls that failed, by type and HTTP status",
           ("provider", "error_type", "http_status_code")),
    Metric("llm_provider_latency_seconds", "histogram", "Provider call latency", ("provider", "model"), SECONDS),
    Metric("llm_provider_tokens_total", "counter", "Tokens by kind", ("provider", "model", "kind")),
    Metric("llm_provider_cost_usd_total", "counter", "Cost in US dollars", ("provider", "model")),
    # Rate limit
    Metric("cj_rate_limit_wait_seconds", "histogram", "Time a request waited for the pool's rate limit", (),
           SECONDS),
    Metric("cj_rate_limit_available", "gauge", "Allowance available now in the pool's limiter", ("bucket",)),
    Metric("cj_rate_limit_limit", "gauge", "The per-minute limit in force (configured or learned)", ("bucket",)),
    # Scoring and quality
    Metric("cj_bt_fit_seconds", "histogram", "Bradley-Terry fit time", (), SECONDS),
    Metric("cj_batch_ssr", "histogram", "Scale separation reliability at finalization", (), UNIT),
    Metric("cj_position_bias", "histogram", "Estimated position-A preference (logit) at finalization", (), LOGIT),
    Metric("cj_comparisons_per_essay", "histogram", "Valid comparisons per essay at finalization", (),
           (2, 4, 6, 8, 10, 12, 15, 20, 30, 50)),
    # Supervision
    Metric("cj_supervisor_actions_total", "counter", "Supervisor actions", ("action",)),
    Metric("cj_supervisor_last_run_timestamp", "gauge", "Unix time of the Supervisor's last sweep"),
)

BY_NAME = {m.name: m for m in CATALOG}


def exported_series_names() -> set[str]:
    """Every series name a scrape can show (histograms add _bucket/_sum/_count)."""
    out = set()
    for m in CATALOG:
        if m.kind == "histogram":
            out |= {f"{m.name}_bucket", f"{m.name}_sum", f"{m.name}_count"}
        else:
            out.add(m.name)
    return out
