"""Creating, resuming and stopping the long-lived actors of a deployment (all detached, in the settings'
namespace, under their DESIGN §5 names). Batch coordinators live inside the coordinator hosts."""

from __future__ import annotations

import ray

from actors import names
from actors.activation import SPREAD
from cjcore.settings import Settings


def resolve_hosts(settings: Settings) -> Settings:
    """The settings with the coordinator host count fixed: CJ_COORDINATOR_HOSTS, else one per CPU of the
    cluster. Every actor is given the same count, so every process routes a batch to the same host."""
    if settings.coordinator_hosts:
        return settings
    return settings.model_copy(update={"coordinator_hosts": max(1, int(ray.cluster_resources().get("CPU", 1)))})


def deploy(settings: Settings, *, services: bool = True) -> dict[str, ray.actor.ActorHandle]:
    """Start (or find) the provider pool, the scoring pool, the coordinator hosts, admission, the Supervisor,
    the outbox publisher and the metrics server; wait until they answer. services=False leaves out the last
    three (tests of the pool alone: each is a process, ~2 s of CPU to start)."""
    from actors.admission import Admission
    from actors.coordinator_host import CoordinatorHost
    from actors.limiter import RateLimiter
    from actors.metrics_server import MetricsServer
    from actors.outbox import OutboxPublisher
    from actors.provider_worker import ProviderWorker
    from actors.scoring import ScoringActor
    from actors.supervisor import Supervisor

    settings = resolve_hosts(settings.for_actors())  # no actor gets the API key (provider workers read it)
    common = {"namespace": settings.ray_namespace, "lifetime": "detached", "get_if_exists": True}
    handles: dict[str, ray.actor.ActorHandle] = {}
    if services:
        handles[names.METRICS] = MetricsServer.options(  # type: ignore[attr-defined]
            name=names.METRICS, **common).remote(settings)
    handles[names.LIMITER] = RateLimiter.options(  # type: ignore[attr-defined]
        name=names.LIMITER, **common).remote(settings.limits(), settings.batches_api_limits())
    ray.get(handles[names.LIMITER].__ray_ready__.remote())  # workers look it up in their constructors
    for i in range(settings.workers):
        handles[names.provider(i)] = ProviderWorker.options(
            name=names.provider(i), scheduling_strategy=SPREAD, **common).remote(i, settings)
    for i in range(settings.scorers):
        handles[names.scoring(i)] = ScoringActor.options(
            name=names.scoring(i), scheduling_strategy=SPREAD, **common).remote(settings.ray_namespace)
    ray.get([h.__ray_ready__.remote() for h in handles.values()])  # hosts look the pools up in their constructors
    for i in range(settings.coordinator_hosts or 1):
        handles[names.coordinator_host(i)] = CoordinatorHost.options(  # type: ignore[attr-defined]
            name=names.coordinator_host(i), scheduling_strategy=SPREAD, **common).remote(i, settings)
    handles[names.ADMISSION] = Admission.options(name=names.ADMISSION, **common).remote(settings)
    if services:
        handles[names.SUPERVISOR] = Supervisor.options(name=names.SUPERVISOR, **common).remote(settings)
        handles[names.OUTBOX] = OutboxPublisher.options(name=names.OUTBOX, **common).remote(settings)
    ray.get([h.__ray_ready__.remote() for h in handles.values()])
    return handles


def teardown(settings: Settings) -> None:
    """Kill the long-lived actors of the settings' namespace (tests, and `down` of a shared cluster)."""
    wanted = [names.LIMITER, names.ADMISSION, names.SUPERVISOR, names.OUTBOX, names.METRICS,
              *map(names.provider, range(settings.workers)), *map(names.scoring, range(settings.scorers)),
              *coordinator_hosts(settings)]
    for name in wanted:
        try:
            ray.kill(ray.get_actor(name, namespace=settings.ray_namespace), no_restart=True)
        except ValueError:
            pass


def coordinator_hosts(settings: Settings) -> list[str]:
    """The names of the namespace's coordinator hosts that are running (their count may differ from today's
    settings: a deployment started with other CPUs)."""
    prefix = names.HOST_PREFIX
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == settings.ray_namespace and a["name"].startswith(prefix)]


def resume(settings: Settings) -> dict[str, int]:
    """After `up`: one Supervisor sweep now, so every non-terminal batch is back in progress on its host (which
    rehydrates it from the database and re-sends what has no result) without waiting for the interval."""
    supervisor = ray.get_actor(names.SUPERVISOR, namespace=settings.ray_namespace)
    return dict(ray.get(supervisor.run_once.remote()))


def shutdown(settings: Settings, drain_timeout_s: float) -> dict[str, int]:
    """Graceful `down`: the workers stop taking work and let the calls already at the provider land (their
    results are recorded by the coordinators, still running), for at most `drain_timeout_s`; then the
    coordinator hosts and the long-lived actors stop. Non-terminal batches stay as the database has them, with
    counters equal to the rows; the next `up` resumes them."""
    workers = []
    for i in range(settings.workers):
        try:
            workers.append(ray.get_actor(names.provider(i), namespace=settings.ray_namespace))
        except ValueError:
            pass
    summary = {"dropped": 0, "in_call": 0, "undelivered": 0, "hosts_stopped": 0}
    report: dict[str, int]
    for report in ray.get([w.drain.remote(drain_timeout_s) for w in workers], timeout=drain_timeout_s + 30):
        for key in ("dropped", "in_call", "undelivered"):
            summary[key] += report[key]
    summary["hosts_stopped"] = len(coordinator_hosts(settings))
    teardown(settings)
    return summary


def metrics_url(settings: Settings) -> str:
    """Where the deployment's /metrics is served (CJ_METRICS_PORT on the node running `cj-metrics`)."""
    return str(ray.get(ray.get_actor(names.METRICS, namespace=settings.ray_namespace).url.remote()))
