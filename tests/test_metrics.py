"""One /metrics endpoint for the whole deployment: every catalog metric with its labels, batch counters
equal to the database, provider counters equal to what the provider served, and a real Prometheus
scraping it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request

import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

from actors import names
from actors.deployment import metrics_url
from cjcore.metrics_catalog import CATALOG
from tests.helpers import essays, host_of, run_batches, sql, wait_until


def _scrape(url: str) -> dict[str, list]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def _value(samples: dict[str, list], name: str, **labels: str) -> float:
    return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture(scope="module")
def observed(deployment_module):
    """A small run with some provider errors in a deployment of its own, then its endpoint."""
    settings, sim = deployment_module
    sim.configure(error_rate=0.2, latency_ms=5.0)
    results = run_batches(settings, [{"essays": essays(8, f"m{i}", anchors={f"m{i}00": "A", f"m{i}01": "F"}),
                                      "max_comparisons": 20} for i in range(3)])
    supervisor = ray.get_actor(names.SUPERVISOR, namespace=settings.ray_namespace)
    ray.get(supervisor.run_once.remote())
    url = metrics_url(settings)
    calls = sum(sim.correlation_ids.values())

    def flushed() -> bool:  # actors send their metrics every half second
        samples = _scrape(url)
        return (_value(samples, "llm_provider_requests_total") == calls
                and _value(samples, "cj_supervisor_actions_total", action="sweep") >= 1)

    wait_until(flushed, timeout_s=30, what="every provider call and the sweep counted")
    return settings, url, results


def test_every_catalog_metric_is_exported_with_its_labels(observed):
    _, url, _ = observed
    samples = _scrape(url)
    for metric in CATALOG:
        series = f"{metric.name}_count" if metric.kind == "histogram" else metric.name
        assert series in samples, f"{series} not exported"
        for sample in samples[series]:
            assert set(metric.labels) <= set(sample.labels), (series, sample.labels)


def test_batch_counters_equal_the_database_after_the_coordinators_are_gone(observed):
    settings, url, results = observed
    samples = _scrape(url)
    ((valid, errors, expired, retried, submitted),) = sql(settings, """
        SELECT count(*) FILTER (WHERE winner IN ('essay_a', 'essay_b')), count(*) FILTER (WHERE winner = 'error'),
               count(*) FILTER (WHERE error_code = 'QUEUE_TIMEOUT'), count(*) FILTER (WHERE retry_of IS NOT NULL),
               count(*)
        FROM cj_comparison_pairs""")
    assert _value(samples, "cj_comparisons_total", outcome="completed") == valid
    assert _value(samples, "cj_comparisons_total", outcome="failed") == errors
    assert _value(samples, "cj_comparisons_total", outcome="expired") == expired
    assert _value(samples, "cj_comparisons_total", outcome="retried") == retried > 0
    assert _value(samples, "cj_comparisons_total", outcome="submitted") == submitted
    (completed_batches,) = sql(settings, "SELECT count(*) FROM cj_batch_states WHERE state = 'COMPLETED'")[0]
    assert _value(samples, "cj_batches", state="COMPLETED") == completed_batches
    for result in results:  # their coordinators have left their hosts' memory
        assert ray.get(host_of(settings, result.batch_id).snapshot.remote(result.batch_id)) is None
    assert _value(samples, "cj_batch_duration_seconds_count", state="COMPLETED") == 3
    assert _value(samples, "cj_batch_ssr_count") == 3


def test_provider_metrics_match_what_the_provider_served(observed, deployment_module):
    _, url, _ = observed
    _, sim = deployment_module
    samples = _scrape(url)
    errors = _value(samples, "llm_provider_api_errors_total", error_type="server_error", http_status_code="500")
    assert errors == sim.stats["server_errors"] > 0
    assert _value(samples, "llm_provider_requests_total", outcome="ok") == sim.stats["ok"]
    assert _value(samples, "llm_provider_tokens_total", kind="output") == sim.stats["output_tokens"]
    assert _value(samples, "llm_provider_cost_usd_total") > 0
    assert _value(samples, "cj_rate_limit_limit", bucket="requests") > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_real_prometheus_scrapes_the_endpoint(observed, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CJ_REQUIRE_PROMETHEUS"):
            pytest.fail("prometheus is not installed (.ci/run installs Debian's package)")
        pytest.skip("Debian's prometheus is not installed (apt-get install prometheus); .ci/run installs it")
    settings, url, _ = observed
    target = urllib.parse.urlsplit(url)
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "cj", "metrics_path": target.path,
                            "static_configs": [{"targets": [target.netloc]}]}],
    }))
    port = _free_port()
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def query(q: str) -> list:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q}),
                                        timeout=5) as r:
                return json.loads(r.read())["data"]["result"]

        def scraped() -> bool:
            try:
                return bool(query('cj_comparisons_total{outcome="completed"}'))
            except OSError:
                return False

        wait_until(scraped, timeout_s=60, what="Prometheus to scrape the endpoint")
        (valid,) = sql(settings, "SELECT count(*) FROM cj_comparison_pairs WHERE winner IN ('essay_a', 'essay_b')")[0]
        assert float(query('cj_comparisons_total{outcome="completed"}')[0]["value"][1]) == valid
        assert query("up")[0]["value"][1] == "1"
        assert query("sum(llm_provider_requests_total)")
    finally:
        proc.terminate()
        proc.wait(10)
