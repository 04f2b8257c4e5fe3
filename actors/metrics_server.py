"""MetricsServer (`cj-metrics`): the deployment's one Prometheus endpoint, `http://<host>:CJ_METRICS_PORT/metrics`.

Why one actor and pushes, rather than each node's Ray metrics agent: a Ray cluster has one agent per node
on its own port, so Prometheus would need Ray's service discovery file to find them all; here every
actor on every node sends its increments to this actor, and one scrape sees the whole deployment. The
batch metrics that must agree with the record (`cj_batches`, `cj_comparisons_total`, stuck batches,
missing projections, outbox backlog) are read from PostgreSQL at each scrape, so they equal the database
even after the coordinators that did the work are gone, and survive a restart of this actor; the
pushed ones (provider, latency, fits, supervisor) restart from zero with it, which Prometheus' rate()
handles as a counter reset. Rate-limit gauges are read from the limiter at each scrape.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from actors import names
from cjcore.metrics_catalog import CATALOG, Metric
from cjcore.settings import Settings
from storage.database import make_engine
from storage.metrics import MetricsQueries

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class MetricsServer:
    async def __init__(self, settings: Settings):  # type: ignore[misc]  # Ray awaits async constructors
        assert settings.database_url
        from aiohttp import web
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self._settings = settings
        self._repo = MetricsQueries(make_engine(settings.database_url_value(), pool_size=1), settings.database_outage_s)
        self._registry = CollectorRegistry()
        self._metrics: dict[str, Any] = {}
        for m in CATALOG:
            self._metrics[m.name] = self._make(m, Counter, Gauge, Histogram)
        self._db = _DatabaseCollector()
        self._registry.register(self._db)
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, settings.metrics_host, settings.metrics_port).start()
        except OSError as exc:  # the port is taken (another deployment on this machine): any free one
            log.warning("CJ_METRICS_PORT %d unavailable (%s); serving metrics on a free port",
                        settings.metrics_port, exc.strerror)
            await web.TCPSite(self._runner, settings.metrics_host, 0).start()
        self._port = self._runner.addresses[0][1]
        log.info("metrics at http://%s:%d/metrics", settings.metrics_host, self._port)

    def _make(self, m: Metric, counter: Any, gauge: Any, histogram: Any) -> Any:
        if m.from_database:
            return None  # served by _DatabaseCollector
        if m.kind == "counter":
            return counter(m.name.removesuffix("_total"), m.help, m.labels, registry=self._registry)
        if m.kind == "gauge":
            return gauge(m.name, m.help, m.labels, registry=self._registry)
        return histogram(m.name, m.help, m.labels, buckets=m.buckets, registry=self._registry)

    async def url(self) -> str:
        host = "127.0.0.1" if self._settings.metrics_host in ("0.0.0.0", "") else self._settings.metrics_host
        return f"http://{host}:{self._port}/metrics"

    async def record(self, events: list[tuple[str, str, tuple[tuple[str, str], ...], float]]) -> None:
        for kind, name, labels, value in events:
            metric = self._metrics[name]
            target = metric.labels(**dict(labels)) if labels else metric
            if kind == "inc":
                target.inc(value)
            elif kind == "observe":
                target.observe(value)
            else:
                target.set(value)

    async def _refresh(self) -> None:
        self._db.snapshot = await self._repo.metrics_snapshot(self._settings.batch_idle_s,
                                                              self._settings.batch_poll_max_s or 0.0)
        try:
            limiter = ray.get_actor(names.LIMITER, namespace=self._settings.ray_namespace)
            stats: dict[str, Any] = await asyncio.wait_for(limiter.stats.remote(), 2.0)
        except (ValueError, ray.exceptions.RayError, TimeoutError):
            return
        for pool in stats["pools"].values():  # one pool per key and model; show the tightest
            for bucket, b in pool["buckets"].items():
                self._metrics["cj_rate_limit_available"].labels(bucket=bucket).set(b["available"])
                self._metrics["cj_rate_limit_limit"].labels(bucket=bucket).set(b["limit_per_min"])

    async def _serve(self, request: Any) -> Any:
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        try:
            await self._refresh()
        except Exception:  # a scrape still shows the pushed metrics when the database is away
            log.exception("metrics refresh from the database failed")
        return web.Response(body=generate_latest(self._registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


class _DatabaseCollector:
    """The batch metrics read from PostgreSQL at the last scrape (see the module docstring)."""

    def __init__(self) -> None:
        self.snapshot: dict[str, Any] | None = None

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.snapshot
        if snap is None:
            return
        meta = {m.name: m for m in CATALOG if m.from_database}
        batches = GaugeMetricFamily("cj_batches", meta["cj_batches"].help, labels=["state"])
        for state, n in sorted(snap["batches"].items()):
            batches.add_metric([state], n)
        yield batches
        comparisons = CounterMetricFamily("cj_comparisons", meta["cj_comparisons_total"].help, labels=["outcome"])
        for outcome, n in sorted(snap["comparisons"].items()):
            comparisons.add_metric([outcome], n)
        yield comparisons
        for name, key in (("cj_stuck_batches", "stuck"), ("cj_completed_without_projections", "no_projections"),
                          ("cj_outbox_unpublished", "outbox_unpublished")):
            yield GaugeMetricFamily(name, meta[name].help, value=snap[key])
